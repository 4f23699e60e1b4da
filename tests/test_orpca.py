"""OR-PCA, written from the paper, recovers the low-rank part of a movie whose answer is
known: a rank-2 sample that changes slowly, plus sparse bright outliers, plus noise."""
from __future__ import annotations

import numpy as np

from lagsplit.bench.orpca import OnlineRobustPCA, noise_level, soft


def _low_rank_plus_sparse(frames: int = 300, size: int = 32, seed: int = 3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = 500 + 200 * np.sin(6 * xx) * np.cos(4 * yy)  # two fixed images, mixed by slow weights
    b = 150 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.3) ** 2) / 0.02)
    t = np.arange(frames) / frames
    low = np.stack([a * (1 - 0.3 * ti) + b * (0.5 + 0.5 * np.sin(2 * np.pi * ti)) for ti in t])
    sparse = np.where(rng.random(low.shape) < 0.03, 800.0, 0.0)  # 3 % of pixels, far above the noise
    noise = rng.normal(0, 5, low.shape)
    return low, sparse, low + sparse + noise


def test_orpca_recovers_the_low_rank_part_and_leaves_the_outliers_out():
    low, sparse, movie = _low_rank_plus_sparse()
    slow = OnlineRobustPCA(rank=2, sparsity=3.0).run(movie)
    late = slice(100, None)  # after the basis has learnt the two images
    err = np.linalg.norm(slow[late] - low[late]) / np.linalg.norm(low[late])
    raw_err = np.linalg.norm(movie[late] - low[late]) / np.linalg.norm(low[late])
    assert err < 0.04 and err < raw_err / 8, (err, raw_err)  # 0.03 against 0.33 for the frames themselves
    miss = np.abs(slow[late] - low[late])
    assert miss[sparse[late] > 0].mean() < 1.5 * miss[sparse[late] == 0].mean()  # the outliers of 800 stay out


def test_the_noise_level_of_one_frame_and_soft_thresholding():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    frame = 100 + 0.5 * xx + 0.2 * yy + rng.normal(0, 7.0, (128, 128))  # a ramp is not noise
    assert abs(noise_level(frame) - 7.0) < 0.3
    np.testing.assert_array_equal(soft(np.array([-3.0, -0.5, 0.0, 2.0]), 1.0), [-2.0, 0.0, 0.0, 1.0])
