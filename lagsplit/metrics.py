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
