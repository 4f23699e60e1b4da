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
    h, w = x.shape
    if h % factor or w % factor or not x.is_contiguous():
        return F.avg_pool2d(x[None, None], factor, ceil_mode=True, count_include_pad=False)[0, 0]
    # whole blocks: add up each block's rows (whole rows at a time, contiguous), then the
    # runs of ``factor`` px of the much smaller result (faster than the pooling kernel on a
    # CPU)
    rows = x.view(h // factor, factor, w).sum(dim=1)
    return rows.view(h // factor, w // factor, factor).sum(dim=2).mul_(1.0 / (factor * factor))


def _phases(factor: int) -> list[float]:
    """For each of the ``factor`` output pixels of an input pixel, its offset from that
    pixel's centre in input pixels (in (-1/2, 1/2)): the bilinear grid of
    ``F.interpolate(..., align_corners=False)``, where each input pixel sits at the centre
    of its block."""
    return [(p + 0.5) / factor - 0.5 for p in range(factor)]


def _shifted(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """``x`` moved one place along ``dim`` (step -1: each place holds its predecessor, +1:
    its successor), the edge repeated (the clamping of bilinear interpolation)."""
    n = x.shape[dim]
    if n == 1:
        return x
    idx = torch.arange(n, device=x.device) + step
    return x.index_select(dim, idx.clamp_(0, n - 1))


def upsample(x: torch.Tensor, factor: int, shape: tuple[int, int], add: torch.Tensor | None = None,
             mul: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear upsampling of a binned plane back to ``shape`` (the inverse grid of
    :func:`bin_frame`: each binned pixel sits at the centre of its block), as
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` computes it; then, when
    given, ``add`` added and ``mul`` multiplied in (full-resolution planes of ``shape``).

    Computed along the columns on the small plane first, then the output rows of each
    phase (the ``factor`` rows of a binned row) as two-term sums of those columns, with
    ``add`` and ``mul`` applied to each slab of rows while it is in cache: one pass over
    the full-resolution planes, faster than the interpolation kernel followed by
    elementwise operations."""
    h, w = x.shape
    H, W = shape
    if factor == 1:
        out = x if add is None else x + add
        return out if mul is None else out * mul
    # along the columns: (h, w) -> (h, w * factor), cropped to W
    cols = torch.empty((h, w, factor), dtype=x.dtype, device=x.device)
    before, after = _shifted(x, 1, -1), _shifted(x, 1, 1)
    for p, off in enumerate(_phases(factor)):
        other = before if off < 0 else after
        torch.add(x * (1.0 - abs(off)), other, alpha=abs(off), out=cols[:, :, p])
    cols = cols.view(h, w * factor)[:, :W]
    # along the rows: each phase's rows of the output from two rows of ``cols``
    out = torch.empty((H, W), dtype=x.dtype, device=x.device)
    before, after = _shifted(cols, 0, -1), _shifted(cols, 0, 1)
    for p, off in enumerate(_phases(factor)):
        rows = out[p::factor]
        n = rows.shape[0]
        if n == 0:
            continue
        other = before if off < 0 else after
        torch.add(cols[:n] * (1.0 - abs(off)), other[:n], alpha=abs(off), out=rows)
        if add is not None:
            rows.add_(add[p::factor])
        if mul is not None:
            rows.mul_(mul[p::factor])
    return out


class FineDetail:
    """The robust running mean ``M`` at full resolution and the detail it lends slow."""

    def __init__(self, factor: int, window: int) -> None:
        self.factor = factor
        self.window = window
        self.mean: torch.Tensor | None = None
        self.n = 0  # frames in the running mean since it (re)started
        self._noise: tuple | None = None  # (working-grid level, its scale, full-res bound)

    def restart(self) -> None:
        """Forget the running mean (a sudden change, or a new stream)."""
        self.n = 0

    def update(self, x: torch.Tensor, noise: torch.Tensor | None, scale: float = 1.0) -> None:
        """Fold one full-resolution frame into the running mean; ``noise`` is the working
        grid's noise level (None while unknown: the update is not clipped) in units of
        ``scale`` frame units (the cascade keeps the mean in ADU, its noise levels in
        normalised units)."""
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
            d = d.clamp_(max=self._bound(noise, scale, tuple(x.shape)))
        self.mean.add_(d, alpha=a)

    def _bound(self, noise: torch.Tensor, scale: float, shape: tuple[int, int]) -> torch.Tensor:
        """HIGH noise levels at full resolution (recomputed only when the level changes)."""
        if self._noise is None or self._noise[0] is not noise or self._noise[1] != scale:
            bound = upsample(noise * (HIGH * self.factor * scale), self.factor, shape)
            self._noise = (noise, scale, bound)
        return self._noise[2]
