"""Slow's level held to the frame's on a faded sample, tile by tile.

The gain of engine/bleach.py is measured on the raw frames, from the low part of each
tile; as a sample fades, shot noise weighs more in that part, and the gain's smoothing
lags a fade that slows down. Both leave slow's level a few percent off the frame's, and the
more so the further the sample has faded. So the level is checked against the frame
itself: spots are a small, bright part of a frame, and the rest of the residual
``frame - slow`` is noise around zero when slow is right. Each tile's residual level is
measured robustly (the mean of the values within ``CLIP`` robust standard deviations of
the centre, centred twice), smoothed over frames with weight ``alpha``, and added to slow
in proportion to how far the sample has faded there (``FULL`` fold or more, 20 %: all of it):

    slow_t += clip(-log g_t / log FULL, 0, 1) * interpolate(EMA_t(robust level of (x_t - slow_t)))

On a sample that has not faded, or has brightened (an illumination step up: shot noise
weighs less, and the gain snaps to the step without lag), nothing changes: there the spots whose tails pass the
bound (many on a crowded or dim sample) would bias the spatial level, while slow's
window statistics, which leave spots out over time, already hold the level.
"""
from __future__ import annotations

import functools
import math

import torch

CLIP = 3.0  # robust standard deviations either side of the centre a residual is kept within
FULL = 1.2  # a tile faded this many fold gets the whole correction


def tile_blocks(x: torch.Tensor, tiles: int) -> torch.Tensor:
    """An (H, W) plane as (ny, nx, pixels) tiles, ``tiles`` a side (fewer on a short side)."""
    h, w = x.shape
    ny, nx = max(1, min(tiles, h)), max(1, min(tiles, w))
    th, tw = h // ny, w // nx
    return x[: ny * th, : nx * tw].reshape(ny, th, nx, tw).permute(0, 2, 1, 3).reshape(ny, nx, th * tw)


def tile_map(grid: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A (ny, nx) grid of per-tile values as an (H, W) plane, interpolated bilinearly
    between the tile centres (and held beyond the outer ones), as
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` computes it. Bilinear
    interpolation is separable: the plane is ``Wy @ grid @ Wx.T`` with one small weight
    matrix per axis, a single pass over the output even at full resolution."""
    wy = _weights(grid.shape[0], shape[0], grid.dtype, grid.device)
    wx = _weights(grid.shape[1], shape[1], grid.dtype, grid.device)
    return (wy @ grid) @ wx.T


@functools.lru_cache(maxsize=32)
def _weights(n: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(size, n): the weight of each of ``n`` tile centres in each of ``size`` pixels."""
    src = ((torch.arange(size, dtype=torch.float64) + 0.5) * (n / size) - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=n - 1)
    i1 = (i0 + 1).clamp_(max=n - 1)
    frac = src - i0
    w = torch.zeros(size, n, dtype=torch.float64)
    w[torch.arange(size), i0] += 1 - frac
    w[torch.arange(size), i1] += frac
    return w.to(dtype=dtype, device=device)


def robust_level(blocks: torch.Tensor, clip: float = CLIP) -> torch.Tensor:
    """Per tile, the mean of the values within ``clip`` robust standard deviations of the
    centre (first the median, then that mean again): symmetric, so noise around zero
    averages to zero, while bright outliers (spots) beyond the bound are left out.
    (ny, nx, n) -> (ny, nx)."""
    centre = blocks.median(dim=2).values
    spread = 1.4826 * (blocks - centre[..., None]).abs().median(dim=2).values
    bound = (clip * spread).clamp_min(1e-6)[..., None]
    for _ in range(2):
        keep = (blocks - centre[..., None]).abs() <= bound
        centre = (blocks * keep).sum(dim=2) / keep.sum(dim=2).clamp_min(1)
    return centre


class LevelMatch:
    """Per-tile offset that brings slow's level to the frame's (``tiles`` a side; 0: off)."""

    def __init__(self, tiles: int, alpha: float) -> None:
        self.tiles = tiles
        self.alpha = alpha
        self.level: torch.Tensor | None = None

    @property
    def enabled(self) -> bool:
        return self.tiles > 0 and self.alpha > 0

    def restart(self) -> None:
        self.level = None

    def offset(self, frame: torch.Tensor, slow: torch.Tensor, gain: torch.Tensor,
               valid: bool = True) -> torch.Tensor | None:
        """The offset map to add to ``slow`` (same shape as ``frame``), given the frame's
        gain map (engine/bleach.py); None when off. An invalid frame leaves the smoothed
        level as it was."""
        if not self.enabled:
            return None
        if valid:
            measured = robust_level(tile_blocks(frame - slow, self.tiles))
            self.level = measured if self.level is None else self.level + self.alpha * (measured - self.level)
        if self.level is None:
            return None
        share = (-gain.log() / math.log(FULL)).clamp_(0.0, 1.0)
        return tile_map(self.level, tuple(frame.shape)) * share
