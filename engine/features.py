"""Temporal features of the slow stage: per-pixel causal statistics of the recent frames
over several windows, computed once when a frame arrives and stored in the ring beside
it, so that training pairs read them back for free.

Two statistics:

- ``median``: the temporal median of the window;
- ``clipped_mean`` (default): the mean of the window's values that lie within
  ``-4 s .. +clip s`` of its median, where ``s`` is the noise level estimated from the
  lower half of the values (median minus lower quartile, robust to bright spots) and
  smoothed over 7x7 px. Spots that pass by are cut out like in a median, but the kept
  values are averaged, so the noise falls as 1/sqrt(n) and integer camera counts do
  not quantise the estimate.

Long windows average the noise away, short ones follow changes. The slow network sees
them all, starts from the longest (``model.slow_skip``) and learns the spatial
denoising and the corrections on top. No window reaches back across a sudden change
(the ring's segments).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .ring import Ring, temporal_median

NOISE_SMOOTH = 7  # px, box over which the per-pixel noise level is averaged
LOW_CLIP = 4.0  # dark outliers kept down to median - 4 s (spots are bright)


def clipped_mean(stack: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over dim 0 of the values within ``-4 s .. +clip s`` of the median, and the noise
    level ``s`` (see module doc). Fewer than 4 values: their median, and a zero noise level."""
    n = stack.shape[0]
    if n < 4:
        med = temporal_median(stack)
        return med, torch.zeros_like(med)
    ordered = stack.sort(dim=0).values
    med = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    q25 = ordered[(n - 1) // 4]
    var = ((med - q25) / 0.6745).square()
    var = F.avg_pool2d(var[None, None], NOISE_SMOOTH, stride=1, padding=NOISE_SMOOTH // 2,
                       count_include_pad=False)[0, 0]
    s = var.sqrt().clamp_min(1e-6)
    keep = (ordered <= med + clip * s) & (ordered >= med - LOW_CLIP * s)
    kept = keep.sum(dim=0)
    mean = torch.where(kept > 0, (ordered * keep).sum(dim=0) / kept.clamp_min(1), med)
    return mean, s


class TemporalFeatures:
    """Writes one plane per window in ``windows`` for each pushed position, into ring
    channels ``first_channel, first_channel + 1, ...`` (normalised units); with the
    clipped mean, one more channel holds the noise level of the longest window (the
    slow stage's loss clips spots in its targets with it; the network does not see it)."""

    @staticmethod
    def channels(windows: tuple[int, ...], statistic: str) -> int:
        """Ring channels the features need."""
        return len(windows) + (1 if windows and statistic == "clipped_mean" else 0)

    def __init__(self, ring: Ring, first_channel: int, windows: tuple[int, ...],
                 statistic: str = "clipped_mean", clip: float = 2.0) -> None:
        self.ring, self.first = ring, first_channel
        self.windows = tuple(windows)
        self.count = len(self.windows)
        self.statistic, self.clip = statistic, clip

    def longest(self) -> int | None:
        """Index of the smoothest plane (the longest window); None without features."""
        if not self.windows:
            return None
        return max(range(self.count), key=lambda j: self.windows[j])

    @property
    def noise_channel(self) -> int | None:
        """Ring channel of the longest window's noise level (None with the median)."""
        return self.first + self.count if self.count and self.statistic == "clipped_mean" else None

    @torch.no_grad()
    def update(self, pos: int) -> None:
        """Compute the planes for the frame just pushed at ``pos`` (from the frames up to it)."""
        longest = self.longest()
        for j, w in enumerate(self.windows):
            stack = self.ring.window(pos, w)
            if self.statistic == "median":
                self.ring.write(self.first + j, pos, temporal_median(stack))
                continue
            mean, noise = clipped_mean(stack, self.clip)
            self.ring.write(self.first + j, pos, mean)
            if j == longest:
                self.ring.write(self.first + self.count, pos, noise)

    def plane(self, j: int, pos: int) -> torch.Tensor:
        return self.ring.plane(self.first + j, pos)
