"""Temporal features of the slow stage: per-pixel causal running medians of the recent
frames, computed once when a frame arrives and stored in the ring beside it, so that
training pairs read them back for free.

A median over a window of frames ignores spots that pass by in less than half the
window; long windows average the noise away, short ones follow changes. The slow
network sees them all, starts from the longest (``model.slow_skip``) and learns the
spatial denoising and the corrections on top.
"""
from __future__ import annotations

import torch

from .ring import Ring


class TemporalFeatures:
    """Writes one plane per window in ``medians`` for each pushed position, into ring
    channels ``first_channel, first_channel + 1, ...`` (normalised units)."""

    def __init__(self, ring: Ring, first_channel: int, medians: tuple[int, ...]) -> None:
        self.ring, self.first = ring, first_channel
        self.medians = tuple(medians)
        self.count = len(self.medians)

    def longest(self) -> int | None:
        """Index of the smoothest plane (the longest window); None without features."""
        if not self.medians:
            return None
        return max(range(self.count), key=lambda j: self.medians[j])

    @torch.no_grad()
    def update(self, pos: int) -> None:
        """Compute the planes for the frame just pushed at ``pos`` (from the frames up to it)."""
        for j, w in enumerate(self.medians):
            self.ring.write(self.first + j, pos, self.ring.running_median(pos, w))
