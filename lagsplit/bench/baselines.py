"""The methods lagsplit is compared with, each a thin wrapper round the library that
implements it (OpenCV, scikit-learn, tensorly); the one no package implements, online
robust PCA, is written from its paper in orpca.py.

Every online method is fed the movie one frame at a time, in order, and answers with
its slow (background) estimate for that frame before it sees the next one, as a live
engine would. Offline robust PCA sees the whole movie at once: it is a reference for
what hindsight buys, not a competitor for a live stream.

Each method takes a small grid of settings; the benchmark reports, per scene and per
metric, the best setting of the grid (so a baseline is never judged on a bad knob).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


class OnlineMethod:
    """Streams frames in, slow estimates out. Subclasses implement ``push``."""

    family = ""
    setting = ""

    def push(self, frame: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, movie: Iterable[np.ndarray]) -> np.ndarray:
        """The slow estimate of every frame, each computed from that frame and the ones before it."""
        return np.stack([self.push(np.asarray(f, np.float32)) for f in movie]).astype(np.float32)


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


class RunningMedian(OnlineMethod):
    """Causal temporal median of the last ``window`` frames (this one included), optionally
    followed by a Gaussian blur of ``blur`` px (denoises the median spatially)."""

    def __init__(self, window: int = 16, blur: float = 0.0) -> None:
        self.window, self.blur = window, blur
        self.family = "running median + blur" if blur else "running median"
        self.setting = f"{window} frames" + (f", sigma {blur:g} px" if blur else "")
        self._buf: np.ndarray | None = None
        self._n = 0

    def push(self, frame: np.ndarray) -> np.ndarray:
        if self._buf is None:
            self._buf = np.empty((self.window, *frame.shape), np.float32)
        self._buf[self._n % self.window] = frame
        self._n += 1
        n = min(self._n, self.window)
        # np.median's value (the mean of the two middle values for an even count, in
        # float32), from a sort along time: numpy sorts a short axis 1.5-3x faster than
        # it partitions it for the median.
        s = np.sort(self._buf[:n], axis=0)
        med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        return _gaussian(med, self.blur) if self.blur else med


class ExponentialAverage(OnlineMethod):
    """Exponential moving average: slow_t = (1 - alpha) slow_{t-1} + alpha x_t."""

    family = "exponential average"

    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha = alpha
        self.setting = f"alpha {alpha:g} (~{1 / alpha:.0f} frames)"
        self._s: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> np.ndarray:
        if self._s is None:
            self._s = frame.astype(np.float32).copy()
        else:
            self._s += self.alpha * (frame - self._s)
        return self._s.copy()


class MOG2(OnlineMethod):
    """OpenCV's Gaussian-mixture background model (``BackgroundSubtractorMOG2``); its
    background image is the slow estimate.

    Input scaling: MOG2's variance defaults assume 8-bit grey levels, so every frame is
    mapped with one fixed linear map (set on the first frame: its 0.1 and 99.9
    percentiles to 10 and 200 of 0..255, headroom both ways) and passed as float32,
    so nothing is quantised; the background image is mapped back to the input's units."""

    family = "OpenCV MOG2"

    def __init__(self, history: int = 100, var_threshold: float = 16.0) -> None:
        import cv2

        self.history = history
        self.setting = f"history {history}, varThreshold {var_threshold:g}"
        self._m = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold, detectShadows=False)
        self._map: tuple[float, float] | None = None

    def push(self, frame: np.ndarray) -> np.ndarray:
        if self._map is None:
            lo, hi = np.percentile(frame, [0.1, 99.9])
            gain = 190.0 / max(float(hi - lo), 1e-6)
            self._map = (float(lo) - 10.0 / gain, gain)
        lo, gain = self._map
        self._m.apply(((frame - lo) * gain).astype(np.float32))
        return (self._m.getBackgroundImage().astype(np.float32) / gain + lo).astype(np.float32)


class IncrementalPCABackground(OnlineMethod):
    """scikit-learn ``IncrementalPCA`` with ``rank`` components, updated every ``batch``
    frames (``partial_fit`` on the frames since the last update). A frame's slow estimate
    is its projection onto the model fitted on the frames before it (the running mean
    until the first fit)."""

    family = "incremental PCA"

    def __init__(self, rank: int = 2, batch: int = 10) -> None:
        from sklearn.decomposition import IncrementalPCA

        self.rank, self.batch = rank, max(batch, rank)
        self.setting = f"rank {rank}, update every {self.batch} frames"
        self._pca = IncrementalPCA(n_components=rank)
        self._pending: list[np.ndarray] = []
        self._fitted = False
        self._sum: np.ndarray | None = None
        self._n = 0

    def push(self, frame: np.ndarray) -> np.ndarray:
        x = frame.reshape(-1).astype(np.float64)
        if self._fitted:
            p = self._pca
            slow = p.mean_ + ((x - p.mean_) @ p.components_.T) @ p.components_
        else:
            self._sum = x.copy() if self._sum is None else self._sum + x
            slow = self._sum / (self._n + 1)
        self._n += 1
        self._pending.append(x)
        if len(self._pending) >= self.batch:
            self._pca.partial_fit(np.stack(self._pending))
            self._pending.clear()
            self._fitted = True
        return slow.reshape(frame.shape).astype(np.float32)


@dataclass
class RobustPCA:
    """Offline robust PCA (tensorly's ``robust_pca``, inexact ALM) on the whole movie as a
    (frames, pixels) matrix: low-rank part = slow, sparse part = fast. Non-causal: every
    frame's estimate uses the whole movie, future included.

    Fair setting: the movie is scaled to unit standard deviation, the sparsity weight is
    the textbook lambda = c / sqrt(max(frames, pixels)), mu starts at 1.25 / ||X||_2 and
    grows 1.5x per iteration for ``iterations`` iterations (25 give the same slow NRMSE to
    four digits as 40 on the brownian scene); float32 on tensorly's PyTorch backend for speed."""

    c: float = 1.0
    iterations: int = 25
    family: str = "robust PCA (offline)"

    @property
    def setting(self) -> str:
        return f"lambda {self.c:g}/sqrt(max(T, HW)), {self.iterations} iterations"

    def run(self, movie: np.ndarray) -> np.ndarray:
        import tensorly as tl
        import torch
        from tensorly.decomposition import robust_pca

        t = len(movie)
        x = np.asarray(movie, np.float32).reshape(t, -1)
        scale = float(x.std()) or 1.0
        previous = tl.get_backend()
        tl.set_backend("pytorch")
        try:
            xt = torch.from_numpy(x / scale)
            mu0 = 1.25 / float(torch.linalg.matrix_norm(xt, ord=2))
            low, _ = robust_pca(xt, reg_E=self.c / np.sqrt(max(x.shape)), mu_init=mu0, learning_rate=1.5,
                                n_iter_max=self.iterations, tol=1e-5, verbose=0)
            low = low.numpy()
        finally:
            tl.set_backend(previous)
        return (low * scale).reshape(movie.shape).astype(np.float32)


def online_grid(quick: bool = False) -> list[OnlineMethod]:
    """Every online baseline at every setting the benchmark tries (``quick``: one each)."""
    from .orpca import OnlineRobustPCA

    if quick:
        return [RunningMedian(16), RunningMedian(16, 1.0), ExponentialAverage(0.05), MOG2(100),
                IncrementalPCABackground(2), OnlineRobustPCA(2)]
    grid: list[OnlineMethod] = []
    for w in (8, 16, 32):
        grid.append(RunningMedian(w))
    for w in (8, 16, 32):
        grid.append(RunningMedian(w, 1.0))
    grid += [ExponentialAverage(a) for a in (0.02, 0.05, 0.1, 0.2)]
    grid += [MOG2(h) for h in (50, 100, 200)]
    grid += [IncrementalPCABackground(r) for r in (1, 2, 4)]
    grid += [OnlineRobustPCA(r, s) for r in (2, 4) for s in (2.0, 4.0)]
    return grid
