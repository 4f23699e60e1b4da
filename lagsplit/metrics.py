"""Error measures shared by the demo, the tests and the benchmarks."""
from __future__ import annotations

import numpy as np


def nrmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Root-mean-square error divided by the standard deviation of the truth (0 is perfect,
    1 is as bad as predicting the truth's mean everywhere)."""
    truth = np.asarray(truth, np.float64)
    err = np.asarray(estimate, np.float64) - truth
    scale = truth.std()
    return float(np.sqrt(np.mean(err**2)) / (scale if scale > 0 else 1.0))


def running_median(movie: np.ndarray, window: int = 16) -> np.ndarray:
    """Causal running median: frame t is the median of frames max(0, t-window+1) .. t."""
    out = np.empty(movie.shape, np.float32)
    for t in range(len(movie)):
        out[t] = np.median(movie[max(0, t - window + 1) : t + 1], axis=0)
    return out


def frame_errors(estimate: np.ndarray, truth: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Per-frame RMSE of (T, H, W) ``estimate`` against ``truth``, divided by ``scale``
    (default: the standard deviation of all of ``truth``, so the frames' errors are on the
    same footing as :func:`nrmse`)."""
    truth = np.asarray(truth, np.float64)
    scale = float(truth.std()) if scale is None else scale
    err = np.asarray(estimate, np.float64) - truth
    return np.sqrt(np.mean(err**2, axis=(1, 2))) / (scale if scale > 0 else 1.0)


def recovery_frames(errors: np.ndarray, change_at: int, before: int = 30, tolerance: float = 0.1,
                    hold: int = 5) -> int | None:
    """Frames after a sudden change until the per-frame error is back within ``tolerance``
    (10 %) of its mean over the ``before`` frames preceding the change, and stays there for
    ``hold`` frames in a row. None when it never recovers within the movie."""
    errors = np.asarray(errors, np.float64)
    level = float(errors[max(0, change_at - before) : change_at].mean())
    ok = errors[change_at:] <= (1.0 + tolerance) * level
    for k in range(len(ok) - hold + 1):
        if ok[k : k + hold].all():
            return k
    return None


def slowness(slow: np.ndarray, raw: np.ndarray) -> float:
    """How slow "slow" is: RMS frame-to-frame change of ``slow`` over that of the raw movie
    (0: constant, 1: changes as much as the data)."""
    ds = np.diff(np.asarray(slow, np.float64), axis=0)
    dr = np.diff(np.asarray(raw, np.float64), axis=0)
    den = np.sqrt(np.mean(dr**2))
    return float(np.sqrt(np.mean(ds**2)) / (den if den > 0 else 1.0))
