"""Online robust PCA (OR-PCA; Feng, Xu and Yan, "Online Robust PCA via Stochastic
Optimization", NIPS 2013), the online counterpart of the offline robust PCA the benchmark
also runs. No maintained package implements it, so it is written here from the paper's
Algorithm 1 and checked against a low-rank-plus-sparse movie whose answer is known
(tests/test_orpca.py).

Each frame z (a vector of pixels) is split as z = L r + e + noise: L is an (n, rank)
basis, r the frame's coefficients, e its sparse part. For the frame, with L fixed,

    min_{r, e}  1/2 ||z - L r - e||^2 + lambda1/2 ||r||^2 + lambda2 ||e||_1

is solved by alternating r = (L'L + lambda1 I)^-1 L'(z - e) and e = soft(z - L r,
lambda2). The frame's slow estimate is L r. Then the basis takes one step of block
coordinate descent on the accumulated statistics A += r r', B += (z - e) r':
column j moves by (B_j - L (A + lambda1 I)_j) / (A + lambda1 I)_jj.

Units: every frame is measured in noise levels of the first frame (Immerkaer's
single-frame estimate), so ``sparsity`` (lambda2) says how many noise levels a pixel must
stand out by to be taken as sparse; lambda1 is 1 in those units. The basis starts as the
first frame (unit norm) and ``rank - 1`` small random columns (seeded).
"""
from __future__ import annotations

import numpy as np

from .baselines import OnlineMethod

_LAPLACE = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_level(img: np.ndarray) -> float:
    """Standard deviation of white noise in one frame (Immerkaer 1996): the mean absolute
    response to a kernel that cancels planes and ramps, scaled for Gaussian noise."""
    x = np.asarray(img, np.float64)
    h, w = x.shape
    if h < 3 or w < 3:
        return float(x.std()) or 1.0
    acc = sum(_LAPLACE[i, j] * x[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
    sigma = np.sqrt(np.pi / 2) * np.abs(acc).sum() / (6.0 * (h - 2) * (w - 2))
    return float(sigma) if sigma > 0 else (float(x.std()) or 1.0)


def soft(x: np.ndarray, t: float) -> np.ndarray:
    """Soft thresholding: shrink every value towards 0 by ``t``."""
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


class OnlineRobustPCA(OnlineMethod):
    """OR-PCA with a basis of ``rank`` columns; ``sparsity``: lambda2 in noise levels;
    ``inner``: alternations of r and e per frame."""

    family = "online robust PCA (OR-PCA)"

    def __init__(self, rank: int = 2, sparsity: float = 3.0, ridge: float = 1.0, inner: int = 8, seed: int = 0) -> None:
        self.rank, self.sparsity, self.ridge, self.inner = rank, sparsity, ridge, inner
        self.setting = f"rank {rank}, lambda2 {sparsity:g} noise levels"
        self._rng = np.random.default_rng(seed)
        self._scale = 0.0
        self._basis: np.ndarray | None = None
        self._a: np.ndarray | None = None
        self._b: np.ndarray | None = None

    def _start(self, z: np.ndarray) -> None:
        n = z.size
        basis = self._rng.standard_normal((n, self.rank)) * (0.01 / np.sqrt(n))
        basis[:, 0] = z / (np.linalg.norm(z) or 1.0)
        self._basis = basis
        self._a = np.zeros((self.rank, self.rank))
        self._b = np.zeros((n, self.rank))

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(r, e) for one frame ``z`` (in noise levels) with the basis as it is."""
        basis = self._basis
        gram = basis.T @ basis + self.ridge * np.eye(self.rank)
        e = np.zeros_like(z)
        r = np.zeros(self.rank)
        for _ in range(self.inner):
            r = np.linalg.solve(gram, basis.T @ (z - e))
            e = soft(z - basis @ r, self.sparsity)
        return r, e

    def update(self, z: np.ndarray, r: np.ndarray, e: np.ndarray) -> None:
        """One block-coordinate-descent pass over the basis' columns (the paper's Algorithm 2)."""
        self._a += np.outer(r, r)
        self._b += np.outer(z - e, r)
        a = self._a + self.ridge * np.eye(self.rank)
        basis = self._basis
        for j in range(self.rank):
            basis[:, j] += (self._b[:, j] - basis @ a[:, j]) / a[j, j]

    def push(self, frame: np.ndarray) -> np.ndarray:
        if self._basis is None:
            self._scale = noise_level(frame)
        z = frame.reshape(-1).astype(np.float64) / self._scale
        if self._basis is None:
            self._start(z)
        r, e = self.split(z)
        slow = self._basis @ r
        self.update(z, r, e)
        return (slow * self._scale).reshape(frame.shape).astype(np.float32)


__all__ = ["OnlineRobustPCA", "noise_level", "soft"]
