"""``lagsplit bench quality``: every scene through every method, scored against the truth.

For each scene: lagsplit streamed through the engine (fixed steps per frame), each online
baseline at each setting of its grid, and offline robust PCA. Every method is scored twice
on the same frames: after warm-up, from ``first`` (a third of the movie) on, and over all
frames from ``start``, the first frame the engine emits after its longest lag
(``max(model.lags)``). lagsplit's own warm-up frames (those it flags: the networks not yet
in use) are compared with the best causal baseline on the same frames, and on the scenes
whose sample fades (:data:`BIAS_SCENES`) the frame mean of fast is checked against the
truth's frame by frame (:func:`fast_mean_bias`).

The scenes are 128x128 px. At another ``size`` (camera sizes, where lagsplit's slow stage
works on binned frames) the scenes keep the crowding of the 128 px ones
(:func:`~lagsplit.adapters.scenes.scene_knobs`), a few of them run by default
(:data:`SIZED_SCENES`), robust PCA runs on the central 128x128 px of frames larger than
that, and the results go to a section of their own (:func:`section_name`).
"""
from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lagsplit.adapters.scenes import REFERENCE_SIZE, SCENES, SPOT_SIGMA, Scene, make_scene, scene_knobs
from lagsplit.engine.detail import bin_factor
from lagsplit.engine.nets import precision_label

from ..config import merge_settings
from ..environ import environ
from ..figure import panel_figure
from ..metrics import frame_errors, nrmse, recovery_frames
from .baselines import RobustPCA, online_grid
from .engine_method import bench_config, run_engine
from .spots import spot_f1

LAGSPLIT = "lagsplit"
STATS_ONLY = "lagsplit, statistics only"
"""The same engine with ``train.mode = "off"``: slow from its window statistics alone (no
network), to measure what the learned part adds."""
OWN = (LAGSPLIT, STATS_ONLY)  # lagsplit's own rows, never counted as baselines

SIZED_SCENES = ("filaments", "bleaching", "drift")
"""The scenes a run at a size other than 128 px plays unless told which: fine static
structure, a background that changes in brightness, one that moves."""

BIAS_SCENES = ("bleaching", "fade", "fademap", "fademove")
"""The scenes whose sample fades: the report gives their fast frame-mean bias."""

RPCA_MAX_SIZE = 128
"""Robust PCA factorises the whole movie as a (frames, pixels) matrix; on frames larger
than this side (px) it runs on their central crop of this side (at 512 px the whole movie
is a 300 x 262,144 matrix, about 16 times the work and memory of a 128 px scene)."""

SPOT_RECENT = 32  # frames: a pixel a spot covered within this many frames counts as visited


def section_name(size: int, kind: str = "quality") -> str:
    """The BENCHMARKS.md section a run of ``kind`` (the quality table, or the ``levers``) at
    ``size`` px writes: ``<kind>`` at 128, else ``<kind><size>``."""
    return kind if size == REFERENCE_SIZE else f"{kind}{size}"


@dataclass
class Score:
    """One method at one setting on one scene."""

    family: str
    setting: str
    slow: float  # NRMSE of slow against the true slow part
    fast: float  # NRMSE of fast (raw - slow) against the noise-free fast part
    f1: float  # best-threshold spot-detection F1 on fast
    recovery: int | None = None  # frames to recover after the scene's sudden change
    seconds: float = 0.0
    online: bool = True
    crop: int | None = None  # side (px) of the central crop it was scored on; None: the whole frame
    slow_all: float = float("nan")  # NRMSE of slow on every frame from the scene's start (the first after the longest lag)
    frame_sq: np.ndarray | None = field(default=None, repr=False)  # (T,) mean squared slow error of each frame
    bias: np.ndarray | None = field(default=None, repr=False)  # (T,) fast frame-mean bias (fast_mean_bias)
    spots: tuple[float, float] | None = None  # (share of the squared slow error, mean signed error) on spot-visited pixels

    def slow_on(self, frames: np.ndarray, truth: np.ndarray) -> float:
        """NRMSE of slow on ``frames`` (indices) alone, ``truth`` the true slow part of the movie."""
        if self.frame_sq is None or not len(frames):
            return float("nan")
        scale = float(np.asarray(truth[frames], np.float64).std())
        return float(np.sqrt(self.frame_sq[frames].mean()) / (scale if scale > 0 else 1.0))


@dataclass
class FamilyResult:
    """A method family on one scene: the best of its settings for each metric."""

    family: str
    slow: Score  # the setting with the best slow NRMSE (its fast NRMSE and recovery go with it)
    f1: Score  # the setting with the best F1
    online: bool
    seconds: float
    all_frames: Score | None = None  # the setting with the best slow NRMSE over all frames (None: slow's)

    @property
    def slow_all(self) -> Score:
        """The setting with the best slow NRMSE over all frames."""
        return self.all_frames or self.slow

    @property
    def settings_note(self) -> str:
        notes = [f"{label}: {s.setting}" for label, s in (("F1", self.f1), ("all frames", self.slow_all))
                 if s.setting != self.slow.setting]
        return self.slow.setting + (f" ({'; '.join(notes)})" if notes else "")


@dataclass
class WarmupResult:
    """lagsplit's warm-up frames from the scene's start on (those it flagged: the networks not
    in use) and the slow NRMSE on them of lagsplit and of the best causal baseline setting."""

    frames: np.ndarray  # the flagged frame indices
    net_from: int | None  # the first frame lagsplit's networks were in use (None: never)
    lagsplit: float
    best: Score | None  # the online baseline setting best on these frames
    best_slow: float

    @property
    def no_worse(self) -> bool:
        return not len(self.frames) or self.lagsplit <= self.best_slow


@dataclass
class SceneResult:
    name: str
    notes: str
    frames: int
    size: int
    first: int
    families: list[FamilyResult]
    figure: Path | None = None
    change_at: int | None = None
    ceiling_f1: float | None = None  # F1 of fast = raw - the true slow part: what a perfect slow scores
    knobs: dict = field(default_factory=dict)  # scene knobs other than the defaults (counts scaled to the size)
    crop: list[Score] = field(default_factory=list)  # lagsplit and robust PCA on the central crop
    start: int | None = None  # the first frame scored over all frames (None: first)
    warmup: WarmupResult | None = None
    fading: bool = False  # the sample fades (one of BIAS_SCENES): the report gives the fast frame-mean bias
    floors: tuple[float, float, float] | None = None  # (spot-visited share, causal floor, whole-movie floor): noise_floors

    def get(self, family: str) -> FamilyResult:
        return next(f for f in self.families if f.family == family)

    def best_online(self, metric: str) -> FamilyResult:
        """The online baseline family best at ``metric``: 'slow', 'slow_all' (slow over all
        frames) or 'f1'."""
        others = [f for f in self.families if f.online and f.family not in OWN]
        if metric == "slow":
            return min(others, key=lambda f: f.slow.slow)
        if metric == "slow_all":
            return min(others, key=lambda f: f.slow_all.slow_all)
        return max(others, key=lambda f: f.f1.f1)

    def offline(self) -> tuple[Score, Score] | None:
        """lagsplit's score and offline robust PCA's on the same pixels (the central crop's
        when robust PCA ran on one); None without robust PCA."""
        rpca = [f for f in self.families if not f.online]
        if rpca:
            return self.get(LAGSPLIT).slow, rpca[0].slow
        pair = [next((s for s in self.crop if (s.family == LAGSPLIT) == mine), None) for mine in (True, False)]
        return (pair[0], pair[1]) if pair[0] and pair[1] else None


@dataclass
class QualityRun:
    scenes: list[SceneResult]
    steps: int
    lagsplit_setting: str
    seconds: float
    command: str = ""
    quick: bool = False
    extra: dict = field(default_factory=dict)
    section: str = "quality"  # the BENCHMARKS.md section it belongs in
    work_size: int = 0  # model.work_size of lagsplit's run
    binning: int = 1  # the factor lagsplit's slow stage bins the frames by


def bench_scene(name: str, frames: int, size: int, seed: int, scaled: bool = False) -> Scene:
    """Scene ``name``; ``scaled``: with the counts that keep its 128 px crowding at ``size``."""
    knobs = scene_knobs(name, size) if scaled else {}
    return make_scene(name, frames=frames, size=size, seed=seed, **knobs)


def crop_window(shape: tuple[int, ...], side: int) -> tuple[slice, slice]:
    """The (rows, columns) of the central ``side`` x ``side`` px of frames of ``shape`` (..., H, W)."""
    h, w = shape[-2:]
    y0, x0 = (h - side) // 2, (w - side) // 2
    return slice(y0, y0 + side), slice(x0, x0 + side)


def central_crop(scene: Scene, side: int) -> Scene:
    """The central ``side`` x ``side`` px of ``scene``, with the true spots that lie there
    (in the crop's coordinates)."""
    rows, cols = crop_window(scene.movie.shape, side)
    origin = np.array([rows.start, cols.start], np.float64)
    spots = []
    for p in scene.spots:
        q = np.asarray(p, np.float64).reshape(-1, 2) - origin
        spots.append(q[((q >= 0) & (q < side)).all(1)])
    return Scene(scene.name, scene.movie[:, rows, cols], scene.slow[:, rows, cols], scene.fast[:, rows, cols],
                 spots, scene.notes, dict(scene.meta))


def fast_mean_bias(slow_est: np.ndarray, scene: Scene) -> np.ndarray:
    """Per frame, how far the frame mean of fast = raw - slow is from that of the true fast
    part, as a fraction of the frame mean of the true slow part above the camera offset:
    ``|mean(raw - slow_est) - mean(fast)| / mean(slow - offset)``. (T,) float64."""
    axes = (1, 2)
    raw = scene.movie.mean(axis=axes, dtype=np.float64)
    est = raw - np.asarray(slow_est).mean(axis=axes, dtype=np.float64)
    true = scene.fast.mean(axis=axes, dtype=np.float64)
    level = scene.slow.mean(axis=axes, dtype=np.float64) - scene.meta.get("offset", 0.0)
    return np.abs(est - true) / np.maximum(level, 1e-9)


def spot_visited(scene: Scene, first: int) -> np.ndarray:
    """(T - first, H, W) bool: the pixels a spot covered lately, frame by frame from ``first``:
    the true fast part averaged over the last :data:`SPOT_RECENT` frames above a tenth of
    the standard deviation of the noise (raw minus both true parts)."""
    noise_sd = float(np.std(scene.movie[first:].astype(np.float64) - scene.slow[first:] - scene.fast[first:]))
    total = np.zeros(scene.fast.shape[1:], np.float64)
    out = np.empty((len(scene.fast) - first, *scene.fast.shape[1:]), bool)
    for t, f in enumerate(scene.fast):
        total += f
        if t >= SPOT_RECENT:
            total -= scene.fast[t - SPOT_RECENT]
        if t >= first:
            out[t - first] = total / min(t + 1, SPOT_RECENT) > 0.1 * noise_sd
    return out


def spot_error(slow_est: np.ndarray, scene: Scene, first: int,
               visited: np.ndarray | None = None) -> tuple[float, float]:
    """On the pixels spots visited lately (``visited``, :func:`spot_visited` when not given),
    frames ``first``..: the share of the squared slow error there, and the mean signed slow
    error there in standard deviations of the true slow part (positive: slow too bright, the
    spots leaking in). Frame by frame: a whole movie in float64 is 0.6 GB at 512 px."""
    mask = spot_visited(scene, first) if visited is None else visited
    total = there_sq = there_sum = 0.0
    for e, t, m in zip(slow_est[first:], scene.slow[first:], mask):
        err = e.astype(np.float64) - t
        there = err[m]
        total += float((err ** 2).sum())
        there_sq += float((there ** 2).sum())
        there_sum += float(there.sum())
    count = int(mask.sum())
    sd = float(scene.slow[first:].std()) or 1.0
    return (there_sq / total if total > 0 else float("nan"),
            there_sum / count / sd if count else float("nan"))


def noise_floors(scene: Scene, first: int, window: int,
                 visited: np.ndarray | None = None) -> tuple[float, float, float]:
    """What the noise alone costs an average of frames, frames ``first``..: (the share of
    spot-visited pixels, the slow NRMSE of the true slow part plus the noise averaged over
    the ``window`` frames up to each frame (a causal window, no spot, no lag), the same with
    the noise averaged over the whole movie (what an offline method may average))."""
    noise = scene.movie.astype(np.float64) - scene.slow - scene.fast
    sd = float(scene.slow[first:].std()) or 1.0
    whole = noise.mean(axis=0)
    total = np.zeros_like(whole)
    causal_sq = 0.0
    for t, n in enumerate(noise):
        total += n
        if t >= window:
            total -= noise[t - window]
        if t >= first:
            causal_sq += float(np.mean((total / min(t + 1, window)) ** 2))
    causal = np.sqrt(causal_sq / (len(noise) - first)) / sd
    visited = spot_visited(scene, first) if visited is None else visited
    return float(visited.mean()), float(causal), float(np.sqrt(np.mean(whole ** 2)) / sd)


def score(slow_est: np.ndarray, scene: Scene, first: int, family: str, setting: str, seconds: float = 0.0,
          online: bool = True, crop: int | None = None, start: int | None = None,
          visited: np.ndarray | None = None) -> Score:
    """Slow and fast NRMSE, spot F1 and (for a scene with a change) recovery frames, on frames
    ``first``..; slow NRMSE on frames ``start``.. (None: ``first``); the per-frame slow error
    and fast frame-mean bias of every frame; the slow error on the pixels spots visited
    (``visited``: the scene's :func:`spot_visited`, computed when not given)."""
    raw = scene.movie.astype(np.float32)
    fast_est = raw[first:] - slow_est[first:]
    truth_slow = scene.slow[first:]
    sigma = scene.meta.get("spot_sigma", SPOT_SIGMA)
    det = spot_f1(fast_est, scene.spots[first:], sigma=sigma)
    rec = None
    change = scene.meta.get("change_at")
    if change is not None and change > first:
        errs = frame_errors(slow_est[first:], truth_slow)
        rec = recovery_frames(errs, change - first)
    out = Score(family, setting, nrmse(slow_est[first:], truth_slow), nrmse(fast_est, scene.fast[first:]),
                det.f1, rec, seconds, online, crop, bias=fast_mean_bias(slow_est, scene))
    out.spots = spot_error(slow_est, scene, first, visited)
    # frame by frame: a whole movie in float64 is 0.6 GB at 512 px
    out.frame_sq = np.array([np.mean((e.astype(np.float64) - t) ** 2) for e, t in zip(slow_est, scene.slow)])
    start = first if start is None else start
    out.slow_all = out.slow_on(np.arange(start, len(slow_est)), scene.slow)
    return out


def warmup_result(warmup: np.ndarray, start: int, lagsplit: Score, baselines: Sequence[Score],
                  truth: np.ndarray) -> WarmupResult:
    """lagsplit's flagged warm-up frames from ``start`` on, and its slow NRMSE there beside the
    best online baseline setting's on the same frames (``truth``: the true slow part)."""
    warmup = np.asarray(warmup, bool)
    frames = np.flatnonzero(warmup[start:]) + start
    used = np.flatnonzero(~warmup)
    net_from = int(used[0]) if len(used) else None
    online = [s for s in baselines if s.online and s.crop is None and s.frame_sq is not None]
    if not len(frames) or not online:
        return WarmupResult(frames, net_from, float("nan"), None, float("nan"))
    best = min(online, key=lambda s: s.slow_on(frames, truth))
    return WarmupResult(frames, net_from, lagsplit.slow_on(frames, truth), best, best.slow_on(frames, truth))


def _family_results(scores: list[Score]) -> list[FamilyResult]:
    fams: dict[str, list[Score]] = {}
    for s in scores:
        fams.setdefault(s.family, []).append(s)
    return [FamilyResult(name, min(ss, key=lambda s: s.slow), max(ss, key=lambda s: s.f1), ss[0].online,
                         sum(s.seconds for s in ss), min(ss, key=lambda s: s.slow_all))
            for name, ss in fams.items()]


def lagsplit_overrides(frames: int, steps: int, extra: dict | None = None) -> dict:
    """The engine settings the benchmark runs lagsplit with: the slow stage in fixed mode,
    ``steps`` per frame (or ``extra``'s ``train.steps_per_frame``), warm-up training short
    enough to end before the scored frames start (unless ``extra`` sets ``train.warmup_steps``)."""
    extra = extra or {}
    steps = extra.get("train", {}).get("steps_per_frame", steps)
    first = frames // 3
    warm = max(1, (first - 16) * steps)
    # Only the slow stage (lag 8): slow and fast do not depend on the shorter lags, which
    # would double the training time without changing a number in the table.
    return merge_settings({"model": {"lags": [8]},
                           "train": {"mode": "fixed", "steps_per_frame": steps, "warmup_steps": min(warm, 100 * steps)}},
                          extra)


def baseline_scores(name: str, frames: int, size: int, seed: int, quick: bool, rpca: bool,
                    scaled: bool = False, start: int | None = None, online: bool = True) -> list[Score]:
    """Every online baseline setting (unless not ``online``) and robust PCA (if ``rpca``) on
    one scene (run in a worker process: the scene is regenerated there from its seed),
    scored over all frames from ``start`` (None: from the first scored after warm-up) as
    well. Robust PCA runs on the central :data:`RPCA_MAX_SIZE` px of larger frames (its
    score says so in ``crop``)."""
    scene = bench_scene(name, frames, size, seed, scaled)
    first = frames // 3
    scores: list[Score] = []
    visited = spot_visited(scene, first) if online else None  # the same pixels for every setting
    for method in online_grid(quick) if online else ():
        t0 = time.perf_counter()
        slow = method.run(scene.movie)
        scores.append(score(slow, scene, first, method.family, method.setting, time.perf_counter() - t0,
                            start=start, visited=visited))
    if rpca:
        robust = RobustPCA(iterations=15) if quick else RobustPCA()
        crop = RPCA_MAX_SIZE if max(scene.movie.shape[1:]) > RPCA_MAX_SIZE else None
        target = central_crop(scene, crop) if crop else scene
        t0 = time.perf_counter()
        slow = robust.run(target.movie)
        scores.append(score(slow, target, first, robust.family, robust.setting, time.perf_counter() - t0,
                            online=False, crop=crop, start=start))
    return scores


def run_scene(name: str, frames: int, size: int, seed: int, steps: int, baselines: Callable[[], list[Score]],
              out_dir: Path | None, overrides: dict | None = None, init: str | None = None,
              log: Callable[[str], None] = lambda s: None, scaled: bool = False) -> SceneResult:
    """lagsplit on one scene, joined with the baselines' scores (``baselines()`` returns them,
    scored over all frames from the first after the longest lag, ``max(model.lags)``; a score
    on a central crop puts lagsplit's score on the same crop beside it)."""
    scene = bench_scene(name, frames, size, seed, scaled)
    first = frames // 3
    cfg = bench_config(lagsplit_overrides(frames, steps, overrides), init=init)
    run = run_engine(scene.movie, cfg)
    m = cfg.model
    start = max(m.lags)
    setting = f"{cfg.train.steps_per_frame} step(s)/frame, lags {list(m.lags)}, windows {list(m.windows)}"
    visited = spot_visited(scene, first)
    mine = score(run.slow, scene, first, LAGSPLIT, setting, run.seconds, start=start, visited=visited)
    ceiling = score(scene.slow, scene, first, "true slow", "", visited=visited).f1
    log(f"  {name}: lagsplit slow {mine.slow:.3f} (all frames from {start}: {mine.slow_all:.3f}) / F1 {mine.f1:.3f} "
        f"({run.seconds:.0f} s)")
    stats_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"mode": "off"})})
    stats = run_engine(scene.movie, stats_cfg)
    stats_only = score(stats.slow, scene, first, STATS_ONLY, "train.mode off", stats.seconds, start=start,
                       visited=visited)
    log(f"  {name}: statistics only slow {stats_only.slow:.3f} ({stats.seconds:.0f} s)")
    others = baselines()
    warm = warmup_result(run.warmup, start, mine, others, scene.slow)
    scores = [mine, stats_only, *(s for s in others if s.crop is None)]
    crops = [s for s in others if s.crop is not None]
    for s in others:
        if not s.online:
            where = f" on the central {s.crop}x{s.crop} px" if s.crop else ""
            log(f"  {name}: {s.family}{where} slow {s.slow:.3f} / F1 {s.f1:.3f} ({s.seconds:.0f} s)")
    if crops:
        side = crops[0].crop
        rows, cols = crop_window(run.slow.shape, side)
        crops.insert(0, score(run.slow[:, rows, cols], central_crop(scene, side), first, LAGSPLIT, setting,
                              run.seconds, crop=side, start=start))
    fig = None
    if out_dir is not None:
        raw = scene.movie.astype(np.float32)
        picks = sorted({first, (first + frames) // 2, frames - 1} | ({scene.meta["change_at"] + 2}
                       if "change_at" in scene.meta else set()))
        prefix = section_name(size) if scaled else "quality"
        fig = panel_figure(raw, run.slow, raw - run.slow, Path(out_dir) / f"{prefix}_{name}.png", frames=picks)
    return SceneResult(name, scene.notes, frames, size, first, _family_results(scores), fig,
                       scene.meta.get("change_at"), ceiling, scene_knobs(name, size) if scaled else {}, crops,
                       start, warm, name in BIAS_SCENES, noise_floors(scene, first, max(m.windows), visited))


def single_threaded_env():
    """Worker processes started inside start with one BLAS/OpenMP thread each."""
    return environ(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"))


def run_quality(scenes: Sequence[str] | None = None, frames: int = 300, size: int = 128, seed: int = 1,
                steps: int = 1, quick: bool = False, out_dir: Path | None = Path("out/bench"),
                overrides: dict | None = None, init: str | None = None, rpca: bool = True,
                log: Callable[[str], None] = print) -> QualityRun:
    """Run the quality benchmark. ``quick``: one small scene, one setting per baseline.

    A ``size`` other than 128 px scales the scenes' counts to it, plays :data:`SIZED_SCENES`
    unless ``scenes`` are given, and names the run's section ``quality<size>`` (with
    ``quick``, the size is capped at 48 px after that choice)."""
    scaled = size != REFERENCE_SIZE
    if quick:
        scenes = scenes or ["filaments"]
        frames, size = min(frames, 60), min(size, 48)
    names = list(scenes or (SIZED_SCENES if scaled else SCENES))
    m = bench_config(lagsplit_overrides(frames, steps, overrides), init=init)
    start = max(m.model.lags)
    t0 = time.perf_counter()
    results = []
    # The baselines run in two worker processes, the online grid and robust PCA of a scene
    # as two jobs, while lagsplit trains in this one (all single-threaded): on two cores
    # the baselines, about twice lagsplit's work, then finish soon after it.
    with single_threaded_env(), ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {name: (pool.submit(baseline_scores, name, frames, size, seed, quick, False, scaled, start),
                       pool.submit(baseline_scores, name, frames, size, seed, quick, rpca, scaled, start, False))
                for name in names}
        for name in names:
            log(f"scene {name} ({frames} frames of {size}x{size})")
            online, offline = jobs[name]
            results.append(run_scene(name, frames, size, seed, steps, lambda a=online, b=offline: a.result() + b.result(),
                                     out_dir, overrides, init, log, scaled))
    desc = (f"{m.train.steps_per_frame} step(s)/frame, lags {list(m.model.lags)}, windows {list(m.model.windows)} "
            "(clipped means), "
            f"warm-up {m.train.warmup_steps} steps, batch {m.train.batch} x {m.train.crop} px crops, "
            f"networks in {precision_label(m.model.precision, m.model.device)}, {m.model.threads} torch thread(s)"
            + (f", from weights {init}" if init else ""))
    return QualityRun(results, steps, desc, time.perf_counter() - t0, quick=quick,
                      section=section_name(size) if scaled else "quality", work_size=m.model.work_size,
                      binning=bin_factor((size, size), m.model.work_size))
