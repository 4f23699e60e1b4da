"""Photobleaching: each frame's brightness relative to the first, per tile of the field.

Fluorescence fades as the fluorophores bleach, often by several times within the first
hundred frames, and not at the same rate everywhere. A window statistic of faded and
unfaded frames lags the fading, by half the window. So the slow stage works on frames
with the fading divided out, and multiplies it back into slow:

    g_t = tile levels of frame t / tile levels of the first frame   (per tile, interpolated)
    the ring, the statistics, the networks:   x_t / g_t
    slow_t = g_t * (slow of the corrected frames)

A tile's level is the mean of its lowest three quarters of pixels (on the working grid):
spots that pass are a small part of a tile and among its brightest, so they hardly move
it, while fading moves all of it. The gain is smoothed over frames with a trend, so a
steady fade is followed without lag and the noise of a dim tile's level is averaged. ``g`` is
interpolated bilinearly between tile centres, so rates that differ across the field are
followed smoothly. The model is multiplicative in ADU: a camera offset does not fade and
is not divided out, so on a camera with a large offset the correction is partial (still
in the right direction). A sudden change of illumination is divided out the same way.
"""
from __future__ import annotations

import torch

from .level import tile_blocks, tile_map

MIN_GAIN, MAX_GAIN = 0.02, 50.0  # a tile never counts as more than 50x faded or brightened
KEEP = 0.75  # the share of a tile's lowest values its level is the mean of
LEVEL_ALPHA, TREND_ALPHA = 0.1, 0.05  # smoothing of each tile's log gain and of its trend per frame
START = 0.02  # a tile this far (about 2 %) from its first level is fading: its gain starts fast
SNAP = 0.1  # a tile's log gain off its prediction by more than this (about 10 %) is taken as measured


def tile_levels(x: torch.Tensor, tiles: int) -> torch.Tensor:
    """Level of each of ``tiles`` x ``tiles`` tiles of an (H, W) plane -> (tiles, tiles)
    (fewer tiles on a side shorter than ``tiles`` px): the mean of the tile's lowest
    ``KEEP`` of values. Bright spots are in the highest values and left out; unlike a
    median, a mean of many values is not stuck to the integer counts of a dim camera."""
    blocks = tile_blocks(x, tiles)
    k = max(1, int(KEEP * blocks.shape[2]))
    return torch.topk(blocks, k, dim=2, largest=False, sorted=False).values.mean(dim=2)


class BleachGain:
    """Per-tile gain of each frame against the first (``tiles`` a side; 0 switches it off)."""

    def __init__(self, tiles: int) -> None:
        self.tiles = tiles
        self.ref: torch.Tensor | None = None

    @property
    def enabled(self) -> bool:
        return self.tiles > 0

    def restart(self) -> None:
        """A new stream: the next frame is the reference."""
        self.ref = None

    def gain(self, x: torch.Tensor) -> torch.Tensor | None:
        """The gain map of one (H, W) frame in ADU (same shape), or None when switched off.

        Each tile's log gain is smoothed with a trend (Holt's linear smoothing): a fade at a
        steady rate is followed without lag, and the gain's frame-to-frame noise (large on
        a dim sample) is averaged down. A jump of more than ``SNAP`` from the prediction
        (an illumination step; no fade moves 10 % in a frame) is taken at once."""
        if not self.enabled:
            return None
        level = tile_levels(x, self.tiles)
        if self.ref is None:
            self._floor = max(1e-3, 0.01 * float(level.abs().max()))
            self.ref = level.clamp_min(self._floor)
            self._log = torch.zeros_like(level)
            self._trend = torch.zeros_like(level)
            self._n = 0
        self._n += 1
        measured = (level.clamp_min(self._floor) / self.ref).clamp(MIN_GAIN, MAX_GAIN).log()
        # over the first frames, a tile that is already fading weighs its new measurements
        # more (as an average of the frames so far would): the smoothing would otherwise lag a
        # fade that starts at once, its trend beginning at zero. A tile within START of its
        # first level keeps the steady weights, so the gain of an unfading sample stays put.
        fading = measured.abs() > START
        a_level = torch.where(fading, max(LEVEL_ALPHA, 2.0 / (self._n + 1)), LEVEL_ALPHA)
        a_trend = torch.where(fading, max(TREND_ALPHA, 2.0 / (self._n + 1)), TREND_ALPHA)
        predicted = self._log + self._trend
        new = predicted + a_level * (measured - predicted)
        trend = self._trend + a_trend * (new - self._log - self._trend)
        # a jump no fade makes in one frame (an illumination step) is taken at once
        jump = (measured - predicted).abs() > SNAP
        self._log = torch.where(jump, measured, new)
        self._trend = torch.where(jump, torch.zeros_like(trend), trend)
        return self.map(tuple(x.shape))

    def map(self, shape: tuple[int, int]) -> torch.Tensor:
        """The last frame's gain over a plane of ``shape`` (the working grid, or the full
        frame it was binned from), interpolated between the tile centres."""
        return tile_map(self._log.exp(), shape)
