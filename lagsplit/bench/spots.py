"""The spot detector and the F1 score every method's fast component gets.

Detector: a Gaussian filter matched to the spot size (sigma in px), local maxima in a
5x5 neighbourhood, kept when the filter response exceeds a threshold. The detector looks
for spots on a fast component whose background should be zero, as a user reads it: a
slow estimate that leaves background behind shows up as false spots or missed ones.
(A Laplacian of Gaussian would remove the smooth background itself, acting as a spatial
background subtractor of its own; with it every method scored within 0.005 of the others.)
Matching: a detection is a true positive when it can be paired one-to-one with a true
spot within ``radius`` px (a maximum bipartite matching, so no spot counts twice).
Every candidate's response is tried as the threshold and each method is scored at its own
best F1, so no method is penalised for the brightness scale of its fast component.
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


def _matching_gains(truth: np.ndarray, cand: np.ndarray, order: np.ndarray, radius: float) -> np.ndarray:
    """How much the one-to-one matching of ``cand`` to ``truth`` grows as each candidate is
    admitted, strongest first (``order``): 1 or 0 per candidate, in ``order``. The matching is
    kept maximum throughout (one augmenting-path search per admitted candidate), so the sum of
    the first k gains is the maximum matching of the k strongest candidates."""
    from scipy.spatial import cKDTree

    gains = np.zeros(len(order), np.int8)
    if len(truth) == 0 or len(cand) == 0:
        return gains
    near = cKDTree(cand).query_ball_tree(cKDTree(truth), radius)  # per candidate: true spots in reach
    owner: dict[int, int] = {}  # true spot -> the candidate it is matched to

    def augment(c: int, seen: set[int]) -> bool:
        for t in near[c]:
            if t not in seen:
                seen.add(t)
                if t not in owner or augment(owner[t], seen):
                    owner[t] = c
                    return True
        return False

    for k, c in enumerate(order):
        if near[c] and augment(int(c), set()):
            gains[k] = 1
    return gains


def best_f1(cands: Candidates, truth: list[np.ndarray], shape: tuple[int, int], radius: float = 2.0,
            margin: int = 3) -> DetectionScore:
    """F1 at the best threshold, every distinct candidate response tried as the threshold
    (an exact sweep of the precision-recall curve: a coarse grid of thresholds misses the
    best one of a method whose fast component leaves many weak maxima). True spots within
    ``margin`` px of the border are not counted (nor are detections there)."""
    truth = [_inside(t, shape, margin) for t in truth]
    n_true = sum(len(t) for t in truth)
    if n_true == 0 or not any(len(r) for r in cands.responses):
        return DetectionScore(0.0, 0.0, 0.0, float("nan"))
    resp, gain = [], []
    for t_pos, c_pos, c_resp in zip(truth, cands.positions, cands.responses):
        order = np.argsort(-c_resp, kind="stable")
        resp.append(c_resp[order])
        gain.append(_matching_gains(t_pos, c_pos, order, radius))
    resp_all, gain_all = np.concatenate(resp), np.concatenate(gain)
    # Admitting candidates in falling response admits each frame's strongest first, as a
    # threshold does, so true positives at a threshold are the summed gains above it.
    order = np.argsort(-resp_all, kind="stable")
    resp_all, tp = resp_all[order], np.cumsum(gain_all[order])
    last = np.r_[resp_all[1:] != resp_all[:-1], True]  # a threshold admits all of equal response
    resp_all, tp = resp_all[last], tp[last].astype(np.float64)
    n_det = np.flatnonzero(last) + 1.0
    precision, recall = tp / n_det, tp / n_true
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    i = int(np.argmax(f1))
    return DetectionScore(float(f1[i]), float(precision[i]), float(recall[i]), float(resp_all[i]))


def spot_f1(fast: np.ndarray, truth: list[np.ndarray], sigma: float = 1.2, radius: float = 2.0,
            margin: int = 3) -> DetectionScore:
    """Detect spots on each frame of ``fast`` and score them against ``truth`` (best threshold)."""
    n_max = max((len(t) for t in truth), default=0)
    cands = find_candidates(fast, sigma, margin, per_frame=max(10, 4 * n_max))
    return best_f1(cands, truth, fast.shape[1:], radius, margin)
