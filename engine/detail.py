"""Frames larger than the working grid: binning down, and slow's fine detail back up.

The slow stage (window statistics, change detector, networks) runs on frames binned to at
most ``model.work_size`` px a side, which makes its cost independent of the camera's frame
size. Slow is slow in time and mostly smooth in space, but a sample's fine structure
(filaments, membranes) is part of it too, and binning removes it. That detail comes back
from a robust running mean kept at full resolution:

    slow = up(slow_work) + (M - up(bin(M)))  =  up(slow_work - bin(M)) + M

``up`` is bilinear upsampling and ``bin`` the same block average the frames go through,
so ``M - up(bin(M))`` is exactly what binning takes out of ``M`` (computed as on the
right: one upsampling per frame). ``M`` is updated per frame
as ``M += a * min(x - M, 2 s)``, ``s`` the per-pixel noise level at full resolution: a
bright spot passing over a pixel moves ``M`` by at most ``2 a s`` per frame, as the
clipped mean leaves spots out; values below ``M`` are taken whole, so a spot in the first
frame fades as from a plain mean, and bleaching is followed. ``s`` is the working grid's
robust noise level (engine/features.py) times the binning factor (white noise averages
down by that factor over a block). ``a`` is ``1 / n`` for the ``n``-th frame of a segment
until it reaches ``1 / window``: a mean that lengthens as frames arrive, then an
exponential one. A sudden change restarts it.

Everything here is elementwise or a pooling at full resolution: a few ms per megapixel.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

HIGH = 2.0  # noise levels above the running mean an update is clipped at (bright spots)


def bin_factor(shape: tuple[int, int], work_size: int) -> int:
    """The smallest integer factor that brings the longest side of ``shape`` within
    ``work_size`` px (1: the frame is used as it is)."""
    if work_size <= 0:
        return 1
    return max(1, math.ceil(max(shape) / work_size))


def bin_frame(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Block average of an (H, W) plane over ``factor`` x ``factor`` px (partial blocks at
    the bottom and right edges are averaged over the pixels they hold)."""
    if factor == 1:
        return x
    return F.avg_pool2d(x[None, None], factor, ceil_mode=True, count_include_pad=False)[0, 0]


def upsample(x: torch.Tensor, factor: int, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a binned plane back to ``shape`` (the inverse grid of
    :func:`bin_frame`: each binned pixel sits at the centre of its block)."""
    if factor == 1:
        return x
    h, w = x.shape
    y = F.interpolate(x[None, None], size=(h * factor, w * factor), mode="bilinear", align_corners=False)
    return y[0, 0, : shape[0], : shape[1]]


class FineDetail:
    """The robust running mean ``M`` at full resolution and the detail it lends slow."""

    def __init__(self, factor: int, window: int) -> None:
        self.factor = factor
        self.window = window
        self.mean: torch.Tensor | None = None
        self.n = 0  # frames in the running mean since it (re)started
        self._noise: tuple[torch.Tensor, torch.Tensor] | None = None  # (working-grid level, full-res bound)

    def restart(self) -> None:
        """Forget the running mean (a sudden change, or a new stream)."""
        self.n = 0

    def update(self, x: torch.Tensor, noise: torch.Tensor | None) -> None:
        """Fold one normalised full-resolution frame into the running mean; ``noise`` is the
        working grid's noise level (None while unknown: the update is not clipped)."""
        if self.mean is None or self.n == 0:
            if self.mean is None:
                self.mean = x.clone()
            else:
                self.mean.copy_(x)
            self.n = 1
            return
        self.n += 1
        a = 1.0 / min(self.n, self.window)
        d = x - self.mean
        if noise is not None:
            d = torch.minimum(d, self._bound(noise, tuple(x.shape)))
        self.mean.add_(d, alpha=a)

    def _bound(self, noise: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """HIGH noise levels at full resolution (recomputed only when the level changes)."""
        if self._noise is None or self._noise[0] is not noise:
            bound = upsample(noise * (HIGH * self.factor), self.factor, shape)
            self._noise = (noise, bound)
        return self._noise[1]
