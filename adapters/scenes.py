"""Generated movies with known noise-free slow and fast parts: the scenes of the
benchmark, the demo and ``source.kind = "synthetic"``, all in one registry (:data:`SCENES`).

Each factory takes ``frames``, ``size`` and ``seed`` (and scene-specific knobs) and
returns a :class:`Scene` in photon counts (plus a camera offset where the scene has
one). ``slow`` is everything that persists (background, structures, illumination
changes), ``fast`` the noise-free spots, ``spots`` their true (y, x) positions per frame.

The default knobs (spot and filament counts) are made for 128x128 px frames;
:func:`scene_knobs` gives the counts that keep another frame size as crowded.

| name | what it tests |
| --- | --- |
| filaments | static filaments, spots moving along them at 0.5-2 px/frame (the demo's scene) |
| brownian | Brownian spots on a structured (cell-like) background |
| bleaching | strong photobleaching: the background halves over the movie |
| drift | a background that drifts and deforms slowly, spots crossing it fast |
| dense | dense spots: a fifth of the field covered |
| lowlight | a few photons per pixel, shot noise and camera read noise |
| blinking | spots that blink in place |
| step | a sudden illumination step two thirds into the movie |
| jump | a sudden stage jump (the whole field shifts) two thirds into the movie |
| fade | strong photobleaching: the sample fades 4x by frame 100, exponentially, to a tenth |
| fademap | as fade, at rates that differ across the field (2x to 6x by frame 100) |
| fademove | strong photobleaching under slowly moving spots (0.2-1 px/frame) |
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SPOT_SIGMA = 1.2  # px, the spot size every scene renders
# Each benchmark scene but filaments seeds its generator with (seed, its own number), so
# scenes differ from each other for the same seed and stay reproducible.


@dataclass
class Scene:
    """A movie (T, H, W) with its noise-free slow and fast parts and the true spot positions
    (one (N_t, 2) array of (y, x) per frame)."""

    name: str
    movie: np.ndarray
    slow: np.ndarray
    fast: np.ndarray
    spots: list[np.ndarray]
    notes: str = ""
    meta: dict = field(default_factory=dict)


# ---- building blocks -------------------------------------------------------------------------
def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflecting edges), sigma in pixels, in float64: the scenes'
    renderer (the engine's blur is torch's, in the frames' float32)."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = k / k.sum()
    p = np.pad(img, r, mode="reflect")
    p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, p)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)


def random_curve(rng: np.random.Generator, size: int, n: int = 400) -> np.ndarray:
    """A smooth random curve across the field: (n, 2) points (y, x), roughly 1 px apart or finer."""
    p0 = rng.uniform(0.1, 0.9, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.6, 1.2) * size
    t = np.linspace(0, 1, n)
    bend = rng.normal(0, 1.2, 3)
    theta = angle + bend[0] * np.sin(np.pi * t) + bend[1] * np.sin(2 * np.pi * t) * 0.5 + bend[2] * t
    step = length / (n - 1)
    dy, dx = np.sin(theta) * step, np.cos(theta) * step
    pts = np.stack([p0[0] + np.cumsum(dy), p0[1] + np.cumsum(dx)], axis=1)
    return pts - pts.mean(0) + p0


def splat(points: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear splat of weighted sub-pixel points into an image."""
    img = np.zeros(shape, np.float64)
    y, x = points[:, 0], points[:, 1]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
        np.add.at(img, (yy[ok], xx[ok]), (weights * w)[ok])
    return img


def render_spots(pos: np.ndarray, amp: np.ndarray | float, shape: tuple[int, int],
                 sigma: np.ndarray | float = SPOT_SIGMA, reach: float = 3.5) -> np.ndarray:
    """Gaussian spots of peak ``amp`` (photons) and width ``sigma`` (px; one for all or one
    per spot) at (y, x) positions, each drawn out to ``reach`` sigma from its centre."""
    img = np.zeros(shape, np.float64)
    amp = np.broadcast_to(np.asarray(amp, np.float64), (len(pos),))
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(pos),))
    for (py, px), a, s in zip(pos, amp, sigma):
        r = int(np.ceil(reach * s))
        cy, cx = int(round(py)), int(round(px))
        y0, y1 = max(0, cy - r), min(shape[0], cy + r + 1)
        x0, x1 = max(0, cx - r), min(shape[1], cx + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1] += a * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * s * s))
    return img


def smooth_background(rng: np.random.Generator, size: int, level: float) -> np.ndarray:
    """A smooth, uneven illumination background around ``level`` photons."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(-0.3, 0.3, 2)
    return level * (1 + a * (yy - 0.5) + b * (xx - 0.5) + 0.15 * np.sin(3 * yy + 2 * xx + rng.uniform(0, 6)))


class CellField:
    """A structured background: a smooth illumination, cell-like blobs and a few filaments,
    drawn on a canvas ``margin`` px larger than the frame on every side so that it can be
    shifted or warped and still fill the frame."""

    def __init__(self, rng: np.random.Generator, size: int, level: float = 20.0, contrast: float = 1.0,
                 n_blobs: int | None = None, n_filaments: int = 3, margin: int = 0) -> None:
        self.size, self.margin = size, margin
        full = size + 2 * margin
        area = (full / 128) ** 2
        n_blobs = n_blobs if n_blobs is not None else int(round(40 * area))
        self.illum = smooth_background(rng, full, level)
        self.centres = rng.uniform(0, full, (n_blobs, 2))
        self.sigmas = rng.uniform(2.5, 8.0, n_blobs)
        self.amps = level * contrast * rng.uniform(0.2, 0.8, n_blobs)
        curves = [random_curve(rng, full) for _ in range(n_filaments)]
        self.fil_pts = np.concatenate(curves) if curves else np.zeros((0, 2))
        step = np.linalg.norm(np.diff(curves[0], axis=0), axis=1).mean() if curves else 1.0
        self.fil_w = np.full(len(self.fil_pts), step)
        self.fil_peak = 1.2 * level * contrast

    def render(self, shift: tuple[float, float] = (0.0, 0.0), warp=None) -> np.ndarray:
        """The (size, size) frame seen through a window moved by ``shift`` (y, x) px;
        ``warp(points) -> points`` displaces structure points (blob centres, filament points)."""
        full = self.size + 2 * self.margin
        shape = (full, full)
        centres, pts = self.centres, self.fil_pts
        if warp is not None:
            centres, pts = warp(centres), warp(pts)
        img = self.illum + render_spots(centres, self.amps, shape, self.sigmas, reach=3)
        if len(pts):
            fil = blur(splat(pts, self.fil_w, shape), 1.0)
            img = img + fil * (self.fil_peak / max(self._fil_norm(), 1e-9))
        m = self.margin
        oy, ox = m + shift[0], m + shift[1]
        if oy == int(oy) and ox == int(ox):
            return img[int(oy) : int(oy) + self.size, int(ox) : int(ox) + self.size]
        return _bilinear_crop(img, oy, ox, self.size)

    def _fil_norm(self) -> float:
        if not hasattr(self, "_norm"):
            full = self.size + 2 * self.margin
            self._norm = float(blur(splat(self.fil_pts, self.fil_w, (full, full)), 1.0).max())
        return self._norm


def _bilinear_crop(img: np.ndarray, oy: float, ox: float, size: int) -> np.ndarray:
    y0, x0 = int(np.floor(oy)), int(np.floor(ox))
    fy, fx = oy - y0, ox - x0
    a = img[y0 : y0 + size + 1, x0 : x0 + size + 1]
    top = a[:-1, :-1] * (1 - fx) + a[:-1, 1:] * fx
    bot = a[1:, :-1] * (1 - fx) + a[1:, 1:] * fx
    return top * (1 - fy) + bot * fy


class Walkers:
    """Spots that move: Brownian (``step`` px per axis per frame) plus a persistent
    velocity (``speed`` px/frame, direction turning by ``turn`` rad/frame); they reflect
    at the borders."""

    def __init__(self, rng: np.random.Generator, n: int, size: int, step: float | tuple[float, float] = 0.0,
                 speed: tuple[float, float] = (0.0, 0.0), turn: float = 0.0) -> None:
        self.rng, self.size = rng, size
        self.pos = rng.uniform(0, size, (n, 2))
        lo, hi = (step, step) if np.isscalar(step) else step
        self.step = rng.uniform(lo, hi, n)
        self.speed = rng.uniform(*speed, n)
        self.angle = rng.uniform(0, 2 * np.pi, n)
        self.turn = turn

    def advance(self) -> np.ndarray:
        n = len(self.pos)
        self.angle += self.rng.normal(0, self.turn, n) if self.turn else 0.0
        v = self.speed[:, None] * np.stack([np.sin(self.angle), np.cos(self.angle)], 1)
        self.pos += v + self.rng.normal(0, 1, (n, 2)) * self.step[:, None]
        hi = self.size - 1e-6
        for _ in range(2):  # reflect, and turn the heading around with it
            low, high = self.pos < 0, self.pos > hi
            self.pos = np.where(low, -self.pos, self.pos)
            self.pos = np.where(high, 2 * hi - self.pos, self.pos)
            flip = (low | high).any(1)
            self.angle[flip] += np.pi
        return self.pos.copy()


def fading(frames: int, fade: np.ndarray | float, by: int = 100, floor: float = 0.1) -> np.ndarray:
    """Photobleaching: the brightness left at each frame, ``floor + (1 - floor) exp(-t / tau)``
    (an exponential decay to the part that does not bleach), ``tau`` chosen so that the
    brightness has fallen ``fade``-fold by frame ``by``. ``fade`` one value, or an (H, W) map
    of them: (frames,) or (frames, H, W)."""
    fade = np.asarray(fade, np.float64)
    if np.any(fade <= 1) or np.any(1 / fade <= floor):
        raise ValueError(f"fade must lie between 1 and 1/floor = {1 / floor:g}, got {fade.min():g}..{fade.max():g}")
    tau = by / np.log((1 - floor) / (1 / fade - floor))
    t = np.arange(frames, dtype=np.float64).reshape(-1, *[1] * fade.ndim)
    return floor + (1 - floor) * np.exp(-t / tau)


def _finish(name: str, slow: np.ndarray, fast: np.ndarray, spots: list[np.ndarray], rng: np.random.Generator,
            notes: str, read_noise: float = 0.0, offset: float = 0.0, **meta) -> Scene:
    """Shot noise (and read noise, camera offset) on slow + fast; uint16 counts like a camera."""
    truth = slow + fast
    movie = rng.poisson(np.maximum(truth, 0)).astype(np.float64)
    if read_noise:
        movie += rng.normal(0, read_noise, movie.shape)
    movie = np.clip(np.round(movie + offset), 0, 65535).astype(np.uint16)
    meta = {"spot_sigma": SPOT_SIGMA, "offset": offset, "read_noise": read_noise, **meta}
    return Scene(name, movie, (slow + offset).astype(np.float32), fast.astype(np.float32), spots, notes=notes, meta=meta)


def _moving_spots(rng: np.random.Generator, n: int, frames: int, size: int, spot_peak: float,
                  **walk) -> tuple[np.ndarray, list[np.ndarray]]:
    """The fast part and the true positions of ``n`` :class:`Walkers` (``walk``: their knobs)
    of peak ``spot_peak`` photons +-30 %."""
    amp = spot_peak * rng.uniform(0.7, 1.3, n)
    walkers = Walkers(rng, n, size, **walk)
    fast = np.empty((frames, size, size), np.float32)
    spots = []
    for t in range(frames):
        pos = walkers.advance()
        fast[t] = render_spots(pos, amp, (size, size), SPOT_SIGMA)
        spots.append(pos)
    return fast, spots


# ---- the scenes ------------------------------------------------------------------------------
def filaments_scene(
    frames: int = 300, size: int = 128, seed: int = 0, n_filaments: int = 6, n_spots: int = 24,
    background: float = 20.0, filament_peak: float = 40.0, spot_peak: float = 60.0,
    speed: tuple[float, float] = (0.5, 2.0),
) -> Scene:
    """Static filaments, spots moving along them at ``speed`` px/frame, Poisson shot noise."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    curves = [random_curve(rng, size) for _ in range(n_filaments)]
    pts = np.concatenate(curves)
    step = np.linalg.norm(np.diff(curves[0], axis=0), axis=1).mean()
    fil = blur(splat(pts, np.full(len(pts), step), shape), 1.0)
    fil *= filament_peak / max(fil.max(), 1e-9)
    slow = (smooth_background(rng, size, background) + fil).astype(np.float32)

    which = rng.integers(0, n_filaments, n_spots)
    arclen = [np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))]) for c in curves]
    s = np.array([rng.uniform(0, arclen[w][-1]) for w in which])
    v = rng.uniform(*speed, n_spots) * rng.choice([-1, 1], n_spots)
    amp = spot_peak * rng.uniform(0.7, 1.3, n_spots)
    fast = np.empty((frames, size, size), np.float32)
    spots = []
    for t in range(frames):
        pos = np.empty((n_spots, 2))
        for i, w in enumerate(which):
            L = arclen[w][-1]
            if s[i] + v[i] < 0 or s[i] + v[i] > L:
                v[i] = -v[i]
            s[i] += v[i]
            pos[i, 0] = np.interp(s[i], arclen[w], curves[w][:, 0])
            pos[i, 1] = np.interp(s[i], arclen[w], curves[w][:, 1])
        inside = (pos[:, 0] >= 0) & (pos[:, 0] < size) & (pos[:, 1] >= 0) & (pos[:, 1] < size)
        fast[t] = render_spots(pos[inside], amp[inside], shape)
        spots.append(pos[inside])
    truth = slow[None] + fast
    movie = rng.poisson(truth).astype(np.uint16)
    return Scene("filaments", movie, np.broadcast_to(slow, truth.shape).copy(), fast, spots,
                 notes="static filaments, spots moving along them at 0.5-2 px/frame, shot noise")


def brownian_scene(frames: int = 300, size: int = 128, seed: int = 0, n_spots: int = 30,
                   step: tuple[float, float] = (0.5, 1.5), level: float = 20.0, spot_peak: float = 50.0,
                   n_filaments: int = 3) -> Scene:
    """Spots diffusing (``step`` px rms per axis per frame) on a structured background."""
    rng = np.random.default_rng((seed, 1))
    field = CellField(rng, size, level, n_filaments=n_filaments)
    slow = np.broadcast_to(field.render(), (frames, size, size)).astype(np.float32)
    fast, spots = _moving_spots(rng, n_spots, frames, size, spot_peak, step=step)
    return _finish("brownian", slow, fast, spots, rng, "Brownian spots (0.5-1.5 px/frame rms per axis) on cells")


def bleaching_scene(frames: int = 300, size: int = 128, seed: int = 0, n_spots: int = 30, level: float = 30.0,
                    spot_peak: float = 50.0, n_filaments: int = 3) -> Scene:
    """The background bleaches exponentially to half its brightness by the last frame;
    the spots (fresh molecules) keep theirs."""
    rng = np.random.default_rng((seed, 2))
    field = CellField(rng, size, level, n_filaments=n_filaments)
    decay = 0.5 ** (np.arange(frames) / max(frames - 1, 1))
    slow = (field.render()[None] * decay[:, None, None]).astype(np.float32)
    fast, spots = _moving_spots(rng, n_spots, frames, size, spot_peak, step=(0.5, 1.2), speed=(0.0, 1.0), turn=0.3)
    return _finish("bleaching", slow, fast, spots, rng, "background bleaches to half over the movie")


def drift_scene(frames: int = 300, size: int = 128, seed: int = 0, n_spots: int = 30, level: float = 20.0,
                spot_peak: float = 50.0, drift: float = 0.06, wobble: float = 3.0, n_filaments: int = 3) -> Scene:
    """The sample drifts (``drift`` px/frame) and deforms (a smooth wave of ``wobble`` px,
    one period over the movie); spots cross it at 1-3 px/frame."""
    rng = np.random.default_rng((seed, 3))
    margin = int(np.ceil(drift * frames + wobble)) + 4
    field = CellField(rng, size, level, n_filaments=n_filaments, margin=margin)
    direction = rng.uniform(0, 2 * np.pi)
    k = rng.uniform(2, 4) * 2 * np.pi / (size + 2 * margin)
    phase = rng.uniform(0, 2 * np.pi)
    slow = np.empty((frames, size, size), np.float32)
    for t in range(frames):
        a = np.sin(2 * np.pi * t / frames)

        def warp(p, a=a):
            d = wobble * a * np.sin(k * (p[:, 0] + p[:, 1]) + phase)
            return p + np.stack([d, -d], 1) / np.sqrt(2)

        shift = (drift * t * np.sin(direction), drift * t * np.cos(direction))
        slow[t] = field.render(shift=shift, warp=warp)
    fast, spots = _moving_spots(rng, n_spots, frames, size, spot_peak, speed=(1.0, 3.0), turn=0.1)
    return _finish("drift", slow, fast, spots, rng, f"background drifts {drift} px/frame and deforms by {wobble} px")


def dense_scene(frames: int = 300, size: int = 128, seed: int = 0, coverage: float = 0.2, level: float = 20.0,
                spot_peak: float = 50.0, n_filaments: int = 3) -> Scene:
    """So many spots that ``coverage`` of the field lies within 2 sigma of one."""
    rng = np.random.default_rng((seed, 4))
    field = CellField(rng, size, level, n_filaments=n_filaments)
    slow = np.broadcast_to(field.render(), (frames, size, size)).astype(np.float32)
    n = int(round(coverage * size * size / (np.pi * (2 * SPOT_SIGMA) ** 2)))
    fast, spots = _moving_spots(rng, n, frames, size, spot_peak, step=(0.3, 1.0), speed=(0.5, 2.0), turn=0.3)
    return _finish("dense", slow, fast, spots, rng, f"{n} spots: {coverage:.0%} of the field covered")


def lowlight_scene(frames: int = 300, size: int = 128, seed: int = 0, n_spots: int = 30, level: float = 3.0,
                   spot_peak: float = 8.0, read_noise: float = 1.5, offset: float = 100.0,
                   n_filaments: int = 3) -> Scene:
    """A few photons per pixel: shot noise, Gaussian read noise (e- rms) and a camera offset (ADU)."""
    rng = np.random.default_rng((seed, 5))
    field = CellField(rng, size, level, n_filaments=n_filaments)
    slow = np.broadcast_to(field.render(), (frames, size, size)).astype(np.float32)
    fast, spots = _moving_spots(rng, n_spots, frames, size, spot_peak, step=(0.5, 1.2), speed=(0.0, 1.0), turn=0.3)
    return _finish("lowlight", slow, fast, spots, rng,
                   f"~{level:g} photons/px background, spots {spot_peak:g} photons peak, read noise {read_noise} e-",
                   read_noise=read_noise, offset=offset)


def blinking_scene(frames: int = 300, size: int = 128, seed: int = 0, n_spots: int = 40, level: float = 20.0,
                   spot_peak: float = 50.0, n_filaments: int = 3) -> Scene:
    """Spots fixed in place that switch on and off (a two-state Markov chain per spot,
    on 15-40 % of the time, 2-6 frames per burst)."""
    rng = np.random.default_rng((seed, 6))
    field = CellField(rng, size, level, n_filaments=n_filaments)
    slow = np.broadcast_to(field.render(), (frames, size, size)).astype(np.float32)
    pos = rng.uniform(3, size - 3, (n_spots, 2))
    amp = spot_peak * rng.uniform(0.7, 1.3, n_spots)
    duty = rng.uniform(0.15, 0.4, n_spots)
    p_off = 1.0 / rng.uniform(2, 6, n_spots)  # mean burst 2-6 frames
    p_on = p_off * duty / (1 - duty)
    on = rng.random(n_spots) < duty
    fast = np.empty((frames, size, size), np.float32)
    spots = []
    for t in range(frames):
        u = rng.random(n_spots)
        on = np.where(on, u >= p_off, u < p_on)
        fast[t] = render_spots(pos[on], amp[on], (size, size), SPOT_SIGMA)
        spots.append(pos[on].copy())
    return _finish("blinking", slow, fast, spots, rng, "spots fixed in place, on 15-40% of the time")


def _change_scene(name: str, frames: int, size: int, seed: int, at: float, gain: float, jump: tuple[float, float],
                  n_spots: int, level: float, spot_peak: float, n_filaments: int, notes: str) -> Scene:
    rng = np.random.default_rng((seed, 7 if name == "step" else 8))
    margin = int(np.ceil(max(abs(jump[0]), abs(jump[1])))) + 2
    field = CellField(rng, size, level, n_filaments=n_filaments, margin=margin)
    change = int(round(at * frames))
    before, after = field.render(), field.render(shift=jump) * gain
    slow = np.empty((frames, size, size), np.float32)
    slow[:change], slow[change:] = before, after
    fast, spots = _moving_spots(rng, n_spots, frames, size, spot_peak, step=(0.3, 0.8), speed=(0.5, 2.0), turn=0.2)
    return _finish(name, slow, fast, spots, rng, notes, change_at=change)


def step_scene(frames: int = 300, size: int = 128, seed: int = 0, at: float = 2 / 3, gain: float = 1.6,
               n_spots: int = 30, level: float = 20.0, spot_peak: float = 50.0, n_filaments: int = 5) -> Scene:
    """The illumination jumps by ``gain`` at ``at`` of the movie (a lamp or laser power change)."""
    return _change_scene("step", frames, size, seed, at, gain, (0.0, 0.0), n_spots, level, spot_peak, n_filaments,
                         f"illumination x{gain:g} at frame {int(round(at * frames))}")


def jump_scene(frames: int = 300, size: int = 128, seed: int = 0, at: float = 2 / 3,
               jump: tuple[float, float] = (6.0, -4.0), n_spots: int = 30, level: float = 20.0,
               spot_peak: float = 50.0, n_filaments: int = 5) -> Scene:
    """The stage jumps by ``jump`` (y, x) px at ``at`` of the movie: every structure moves at once."""
    return _change_scene("jump", frames, size, seed, at, 1.0, jump, n_spots, level, spot_peak, n_filaments,
                         f"stage jump of {jump} px at frame {int(round(at * frames))}")


def _fade_scene(name: str, number: int, frames: int, size: int, seed: int, fade: float | tuple[float, float],
                n_spots: int, level: float, spot_peak: float, n_filaments: int, walk: dict,
                notes: str) -> Scene:
    """A cell-like sample that bleaches (:func:`fading`; ``fade`` a pair: the fold by frame
    100 goes from one to the other along a random direction across the field), under spots
    of constant brightness (fresh molecules) moving as ``walk`` says."""
    rng = np.random.default_rng((seed, number))
    field = CellField(rng, size, level, n_filaments=n_filaments)
    if isinstance(fade, tuple):
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
        along = (yy * np.sin(angle) + xx * np.cos(angle)) / (abs(np.sin(angle)) + abs(np.cos(angle)))  # -0.5 .. 0.5
        rate = fade[0] + (fade[1] - fade[0]) * (along + 0.5)
    else:
        rate = fade
    left = fading(frames, rate)
    if left.ndim == 1:
        left = left[:, None, None]
    slow = (field.render()[None] * left).astype(np.float32)
    fast, spots = _moving_spots(rng, n_spots, frames, size, spot_peak, **walk)
    return _finish(name, slow, fast, spots, rng, notes, fade=fade)


def fade_scene(frames: int = 300, size: int = 128, seed: int = 0, fade: float = 4.0, n_spots: int = 30,
               level: float = 60.0, spot_peak: float = 50.0, n_filaments: int = 3) -> Scene:
    """The sample bleaches ``fade``-fold by frame 100 and on to a tenth of its brightness
    (:func:`fading`); Brownian spots keep theirs."""
    return _fade_scene("fade", 9, frames, size, seed, fade, n_spots, level, spot_peak, n_filaments,
                       dict(step=(0.5, 1.2), speed=(0.0, 1.0), turn=0.3),
                       f"sample fades {fade:g}x by frame 100, exponentially, to a tenth")


def fademap_scene(frames: int = 300, size: int = 128, seed: int = 0, fade: tuple[float, float] = (2.0, 6.0),
                  n_spots: int = 30, level: float = 60.0, spot_peak: float = 50.0, n_filaments: int = 3) -> Scene:
    """As :func:`fade_scene`, the fold by frame 100 going from ``fade[0]`` to ``fade[1]`` in a
    straight gradient across the field (corner to corner or side to side, at a random angle)."""
    return _fade_scene("fademap", 10, frames, size, seed, tuple(fade), n_spots, level, spot_peak, n_filaments,
                       dict(step=(0.5, 1.2), speed=(0.0, 1.0), turn=0.3),
                       f"sample fades {fade[0]:g}x to {fade[1]:g}x by frame 100 across the field")


def fademove_scene(frames: int = 300, size: int = 128, seed: int = 0, fade: float = 5.0, n_spots: int = 30,
                   level: float = 60.0, spot_peak: float = 50.0, speed: tuple[float, float] = (0.2, 1.0),
                   n_filaments: int = 3) -> Scene:
    """The sample bleaches ``fade``-fold by frame 100 under spots moving slowly and steadily
    (``speed`` px/frame, heading turning by 0.1 rad/frame): they linger for frames over each pixel."""
    return _fade_scene("fademove", 11, frames, size, seed, fade, n_spots, level, spot_peak, n_filaments,
                       dict(speed=speed, turn=0.1),
                       f"sample fades {fade:g}x by frame 100, spots moving {speed[0]:g}-{speed[1]:g} px/frame")


SCENES: dict[str, Callable[..., Scene]] = {
    "filaments": filaments_scene,
    "brownian": brownian_scene,
    "bleaching": bleaching_scene,
    "drift": drift_scene,
    "dense": dense_scene,
    "lowlight": lowlight_scene,
    "blinking": blinking_scene,
    "step": step_scene,
    "jump": jump_scene,
    "fade": fade_scene,
    "fademap": fademap_scene,
    "fademove": fademove_scene,
}
"""Every scene by name, in the order of the table above: the benchmark's, the demo's and
``source.kind = "synthetic"``'s."""


def make_scene(name: str, **kwargs) -> Scene:
    """Scene ``name`` of :data:`SCENES`, built with the factory's knobs ``kwargs``."""
    return _factory(name)(**kwargs)


def _factory(name: str) -> Callable[..., Scene]:
    try:
        return SCENES[name]
    except KeyError:
        raise ValueError(f"unknown scene {name!r}; known: {', '.join(SCENES)}") from None


REFERENCE_SIZE = 128
"""The frame side (px) every scene's default knobs are made for."""

AREA_KNOBS = ("n_spots",)
"""Knobs that count things scattered over the field: they scale with its area."""
LENGTH_KNOBS = ("n_filaments",)
"""Knobs that count filaments, each as long as the field is wide: they scale with its side,
which keeps the filament length per unit area."""


def scene_knobs(name: str, size: int) -> dict[str, int]:
    """The knobs that give scene ``name`` at ``size`` x ``size`` px the crowding of its
    :data:`REFERENCE_SIZE` default, as if that field were tiled: spot counts times
    (size / 128)^2, filament counts times size / 128 (at least 1 each). Empty at 128 (the
    defaults). The dense scene's spots and every scene's cell-like blobs follow the area
    already, and sizes in px (spot width, blob width, speeds, drift) stay as they are."""
    factory = _factory(name)
    if size == REFERENCE_SIZE:
        return {}
    ratio = size / REFERENCE_SIZE
    knobs = {}
    for param in inspect.signature(factory).parameters.values():
        if param.name in AREA_KNOBS:
            knobs[param.name] = max(1, round(param.default * ratio**2))
        elif param.name in LENGTH_KNOBS:
            knobs[param.name] = max(1, round(param.default * ratio))
    return knobs
