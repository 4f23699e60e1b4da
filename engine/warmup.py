"""Slow before the networks are in use: the best of a few simple causal estimates, chosen
on the frames themselves.

Until the slow network has trained (warm-up) and while it settles after a sudden change,
slow is a window statistic. Which one is best depends on the scene: a long window with
a light blur on a still sample, a short one on a drifting sample, a wider blur on a dim
one. The candidates are each window's clipped mean (engine/features.py) and the mean of
each two windows of neighbouring lengths, each blurred by each of ``SIGMAS``, and the
settling plane (the longest window, blurred less as it fills).

As the slow network is, each candidate is scored on how well the candidate made ``lag``
frames earlier (the longest lag) predicts the new frame: its mean absolute error, summed
with ``DECAY`` per frame (the absolute error ignores spots, which occupy a pixel part of
the time). Over that many frames spots have moved on or switched off, so a candidate
that follows them (a short window, little blur) gains nothing, while one that follows
the sample's own change (drift, fading) does. The one with the lowest score gives slow;
until the candidates have been scored on ``MIN_SCORED`` frames, the settling plane does.
"""
from __future__ import annotations

from collections import deque

import torch

from .features import TemporalFeatures, gaussian_blur

SIGMAS = (0.0, 1.0, 2.0)  # px, the blurs each window's statistic is tried with
DECAY = 0.9  # weight of the score so far at each new frame
MIN_SCORED = 8  # frames scored before a candidate may replace the settling plane


class WarmupChoice:
    """Chooses slow's estimate while the networks are not in use (see the module docstring)."""

    def __init__(self, features: TemporalFeatures, blur: float, lag: int) -> None:
        self.features = features
        self.blur = blur
        self.lag = max(1, lag)
        self.order = sorted(range(features.count), key=lambda j: features.windows[j])
        self.restart()

    def restart(self) -> None:
        """Forget the scores (a new stream, or a sudden change: every window starts afresh)."""
        self.loss: torch.Tensor | None = None
        self.scored = 0
        self.made: deque[tuple[int, torch.Tensor]] = deque(maxlen=self.lag)  # (position, candidates)
        self.choice: int | torch.Tensor = 0  # the settling plane, then the best-scored candidate's index

    def candidates(self, pos: int) -> torch.Tensor:
        """(K, H, W): the settling plane, then each window's statistic under each blur."""
        planes = [self.features.settling_plane(pos, self.blur)]
        stats = [self.features.plane(j, pos) for j in self.order]
        # each window's statistic, and the mean of each two of consecutive lengths (a window
        # between the two, for the noise and lag it trades)
        stats += [(a + b) * 0.5 for a, b in zip(stats, stats[1:])]
        for p in stats:
            planes.extend(gaussian_blur(p, s) for s in SIGMAS)
        return torch.stack(planes)

    def plane(self, pos: int, frame: torch.Tensor, valid: bool = True) -> torch.Tensor:
        """Slow at ``pos`` for ``frame`` (the working-grid frame just pushed there)."""
        if valid and len(self.made) == self.lag and self.made[0][0] == pos - self.lag:
            # the scores and the choice stay on the frames' device (no copy to the host)
            err = (self.made[0][1] - frame[None]).abs().mean(dim=(1, 2)).double()
            self.loss = err if self.loss is None else DECAY * self.loss + err
            self.scored += 1
            if self.scored >= MIN_SCORED:
                self.choice = self.loss.argmin().reshape(1)
        planes = self.candidates(pos)
        self.made.append((pos, planes))
        return planes[0] if isinstance(self.choice, int) else planes.index_select(0, self.choice)[0]

    def skip(self) -> None:
        """The networks gave slow for this frame: the candidates made so far are dropped."""
        self.made.clear()
