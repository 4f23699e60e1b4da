"""Generated movies with known slow and fast ground truth.

The default scene is the case the method was invented for: static filaments
(microtubules) with fluorescent spots moving along them at 0.5-2 px/frame, on a
smooth background, with shot noise. Slow truth = background + filaments, fast
truth = spots, both noise-free, in photon counts.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lagsplit.engine.frame import Frame


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


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflecting edges), sigma in pixels."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
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


def render_spots(pos: np.ndarray, amp: np.ndarray | float, shape: tuple[int, int], sigma: float = 1.2) -> np.ndarray:
    """Gaussian spots of peak ``amp`` (photons) at (y, x) positions."""
    img = np.zeros(shape, np.float64)
    if len(pos) == 0:
        return img
    amp = np.broadcast_to(np.asarray(amp, np.float64), (len(pos),))
    r = int(np.ceil(3.5 * sigma))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    for (py, px), a in zip(pos, amp):
        cy, cx = int(round(py)), int(round(px))
        g = a * np.exp(-((yy + cy - py) ** 2 + (xx + cx - px) ** 2) / (2 * sigma**2))
        y0, x0 = cy - r, cx - r
        ys, xs = slice(max(0, y0), min(shape[0], y0 + 2 * r + 1)), slice(max(0, x0), min(shape[1], x0 + 2 * r + 1))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        img[ys, xs] += g[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return img


def smooth_background(rng: np.random.Generator, size: int, level: float) -> np.ndarray:
    """A smooth, uneven illumination background around ``level`` photons."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(-0.3, 0.3, 2)
    return level * (1 + a * (yy - 0.5) + b * (xx - 0.5) + 0.15 * np.sin(3 * yy + 2 * xx + rng.uniform(0, 6)))


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


SCENES: dict[str, Callable[..., Scene]] = {"filaments": filaments_scene}


def make_scene(name: str, **kwargs) -> Scene:
    """Build a registered scene by name (see ``SCENES``; adapters.scenes registers the benchmark's)."""
    from . import scenes as _scenes  # noqa: F401 - registers the benchmark scenes

    try:
        factory = SCENES[name]
    except KeyError:
        raise ValueError(f"unknown synthetic scene {name!r}; known: {', '.join(sorted(SCENES))}") from None
    return factory(**kwargs)


class ArrayStream:
    """Plays a (T, H, W) array (or anything indexable frame by frame) as a live stream: frames at ``fps`` (0: as fast as possible).

    ``sleep`` and ``clock`` can be injected: tests pass a fake pair and never sleep for real
    (tests/test_array_stream.py). ``times``: the acquisition time of each frame (seconds), used
    as its timestamp; without them a frame's timestamp is when it was played.
    """

    def __init__(self, movie: np.ndarray, fps: float = 0.0, name: str = "array", first_index: int = 0,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 times: np.ndarray | None = None) -> None:
        if len(movie.shape) != 3:
            raise ValueError(f"{name}: expected a (T, H, W) stack, got shape {movie.shape}")
        if times is not None and len(times) != len(movie):
            raise ValueError(f"{name}: {len(times)} acquisition times for {len(movie)} frames")
        self.times = times
        self.movie = movie
        self.fps = fps
        self.name = name
        self.first_index = first_index
        self.clock = clock
        self._stopped = False
        self._sleep = sleep
        self.sent = 0

    @property
    def live(self) -> bool:
        """Paced at ``fps`` (contracts.AdapterHooks.live)."""
        return self.fps > 0

    def describe(self) -> str:
        t, h, w = self.movie.shape
        rate = f"{self.fps:g} fps" if self.fps else "as fast as possible"
        return f"{self.name} ({t} frames of {h}x{w} {self.movie.dtype}, {rate})"

    def open(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._stopped = True

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent}

    def _wait_until(self, t: float) -> None:
        while not self._stopped:
            left = t - self.clock()
            if left <= 0:
                return
            (self._sleep or time.sleep)(min(left, 0.05))

    def __iter__(self) -> Iterator[Frame]:
        t0 = self.clock()
        wall0 = time.time()
        for i in range(len(self.movie)):
            if self._stopped:
                return
            if self.fps:
                self._wait_until(t0 + i / self.fps)
                if self._stopped:
                    return
            ts = float(self.times[i]) if self.times is not None else wall0 + (i / self.fps if self.fps else self.clock() - t0)
            self.sent += 1
            yield Frame(index=self.first_index + i, timestamp=ts, array=np.asarray(self.movie[i]), meta={"source": self.name})


class SyntheticAdapter(ArrayStream):
    """The ``synthetic`` adapter: a generated scene played as a live stream; keeps its ground truth."""

    def __init__(self, scene: str = "filaments", frames: int = 300, size: int = 128, seed: int = 0,
                 fps: float = 0.0, **kw) -> None:
        self.scene = make_scene(scene, frames=frames, size=size, seed=seed)
        super().__init__(self.scene.movie, fps=fps, name=f"synthetic:{scene}", **kw)
