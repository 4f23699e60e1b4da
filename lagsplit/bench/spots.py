"""The spot detector and the F1 score every method's fast component gets.

Detector: a Gaussian filter matched to the spot size (sigma in px), local maxima in a
5x5 neighbourhood, kept when the filter response exceeds a threshold. The detector looks
for spots on a fast component whose background should be zero, as a user reads it: a
slow estimate that leaves background behind shows up as false spots or missed ones.
(A Laplacian of Gaussian would remove the smooth background itself, acting as a spatial
background subtractor of its own; with it every method scored within 0.005 of the others.)
Matching: a detection is a true positive when it can be paired one-to-one with a true
spot within ``radius`` px (a maximum bipartite matching, so no spot counts twice).
The threshold is swept and each method is scored at its own best F1, so no method is
penalised for the brightness scale of its fast component.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidates:
    """Local maxima of the filtered fast component: per frame (y, x) positions and responses."""

    positions: list[np.ndarray]
    responses: list[np.ndarray]


@dataclass
class DetectionScore:
    f1: float
    precision: float
    recall: float
    threshold: float


def find_candidates(fast: np.ndarray, sigma: float = 1.2, margin: int = 3, per_frame: int | None = None) -> Candidates:
    """Local maxima of the Gaussian-filtered (H, W) frames of ``fast``; the ``per_frame``
    strongest are kept (default: all positive ones), ``margin`` px from the border excluded."""
    from scipy import ndimage

    pos, resp = [], []
    for frame in np.asarray(fast, np.float32):
        r = ndimage.gaussian_filter(frame, sigma)
        peak = (r == ndimage.maximum_filter(r, size=5)) & (r > 0)
        if margin:
            peak[:margin], peak[-margin:], peak[:, :margin], peak[:, -margin:] = False, False, False, False
        yx = np.argwhere(peak)
        v = r[peak]
        if per_frame is not None and len(v) > per_frame:
            keep = np.argpartition(-v, per_frame)[:per_frame]
            yx, v = yx[keep], v[keep]
        pos.append(yx.astype(np.float32))
        resp.append(v.astype(np.float32))
    return Candidates(pos, resp)


def _inside(points: np.ndarray, shape: tuple[int, int], margin: int) -> np.ndarray:
    p = np.asarray(points, np.float64).reshape(-1, 2)
    ok = (p[:, 0] >= margin) & (p[:, 0] <= shape[0] - 1 - margin) & (p[:, 1] >= margin) & (p[:, 1] <= shape[1] - 1 - margin)
    return p[ok]


def best_f1(cands: Candidates, truth: list[np.ndarray], shape: tuple[int, int], radius: float = 2.0,
            margin: int = 3, thresholds: int = 40) -> DetectionScore:
    """F1 at the best threshold over ``thresholds`` quantiles of the candidates' responses.
    True spots within ``margin`` px of the border are not counted (nor are detections there)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree

    truth = [_inside(t, shape, margin) for t in truth]
    n_true = sum(len(t) for t in truth)
    allr = np.concatenate(cands.responses) if cands.responses else np.zeros(0)
    if n_true == 0 or len(allr) == 0:
        return DetectionScore(0.0, 0.0, 0.0, float("nan"))
    levels = np.unique(np.quantile(allr, np.linspace(0.0, 0.995, thresholds)))
    tp = np.zeros(len(levels))
    n_det = np.zeros(len(levels))
    for t_pos, c_pos, c_resp in zip(truth, cands.positions, cands.responses):
        if len(c_pos) == 0:
            continue
        n_det += (c_resp[None, :] >= levels[:, None]).sum(1)
        if len(t_pos) == 0:
            continue
        pairs = cKDTree(t_pos).sparse_distance_matrix(cKDTree(c_pos), radius, output_type="coo_matrix")
        if pairs.nnz == 0:
            continue
        for i, lev in enumerate(levels):
            ok = c_resp[pairs.col] >= lev
            if not ok.any():
                break  # levels rise: nothing matches at higher ones either
            g = csr_matrix((np.ones(int(ok.sum())), (pairs.row[ok], pairs.col[ok])), shape=(len(t_pos), len(c_pos)))
            tp[i] += int((maximum_bipartite_matching(g, perm_type="column") >= 0).sum())
    precision = np.divide(tp, n_det, out=np.zeros_like(tp), where=n_det > 0)
    recall = tp / n_true
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    i = int(np.argmax(f1))
    return DetectionScore(float(f1[i]), float(precision[i]), float(recall[i]), float(levels[i]))


def spot_f1(fast: np.ndarray, truth: list[np.ndarray], sigma: float = 1.2, radius: float = 2.0,
            margin: int = 3) -> DetectionScore:
    """Detect spots on each frame of ``fast`` and score them against ``truth`` (best threshold)."""
    n_max = max((len(t) for t in truth), default=0)
    cands = find_candidates(fast, sigma, margin, per_frame=max(10, 4 * n_max))
    return best_f1(cands, truth, fast.shape[1:], radius, margin)
