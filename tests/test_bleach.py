"""Photobleaching divided out before the slow stage and multiplied back into slow."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lagsplit.engine.bleach import BleachGain, tile_levels
from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig
from lagsplit.engine.level import tile_map


def test_tile_levels_are_tile_medians_that_ignore_a_few_bright_spots():
    x = torch.ones(8, 8)
    x[4:, :4] = 3.0
    x[0, 0] = x[1, 1] = 100.0  # spots in the first tile
    np.testing.assert_allclose(tile_levels(x, 2).numpy(), [[1.0, 1.0], [3.0, 1.0]])


@pytest.mark.parametrize(("tiles", "shape"), [((2, 2), (128, 128)), ((2, 2), (1000, 1024)), ((4, 3), (17, 5)),
                                             ((1, 2), (3, 9))])
def test_tile_map_interpolates_bilinearly_between_tile_centres(tiles, shape):
    grid = torch.rand(tiles, generator=torch.Generator().manual_seed(1))
    want = F.interpolate(grid[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(tile_map(grid, shape), want, atol=1e-6, rtol=0)


def test_gain_follows_fading_that_differs_across_the_field():
    g = BleachGain(tiles=4)
    y, x = np.mgrid[0:64, 0:64]
    base = torch.full((64, 64), 200.0)
    assert torch.allclose(g.gain(base), torch.ones(64, 64))
    rate = torch.from_numpy(np.where(x < 32, 0.5, 0.9).astype(np.float32))  # left half fades faster
    for t in range(1, 61):  # a steady fade, to the rates above by frame 60, followed without lag
        gain = g.gain(base * rate ** (t / 60))
    assert abs(float(gain[:, :8].mean()) - 0.5) < 0.01 and abs(float(gain[:, -8:].mean()) - 0.9) < 0.01
    g.restart()
    assert torch.allclose(g.gain(base * rate), torch.ones(64, 64))  # a new stream: a new reference


def _bleaching_movie(frames: int = 60, size: int = 32, seed: int = 0):
    """A static structured sample fading 4x over the movie, spots on top, shot noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    sample = 300 + 200 * np.sin(yy / 3.0) ** 2
    fade = 0.25 ** (np.arange(frames) / (frames - 1))
    slow = sample[None] * fade[:, None, None]
    movie = rng.poisson(slow + 0.0).astype(np.float32)
    for t in range(frames):
        cy, cx = (3 * t) % size, (7 * t) % size
        movie[t, cy, cx] += 400
    return movie, slow.astype(np.float32)


def _warmup_slow(movie, tiles):
    cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8, 32), bleach_tiles=tiles)
    c = Cascade(cfg, history=8, warmup_steps=10**6)  # the statistic path throughout
    return np.stack([c.to_adu(c.infer(torch.from_numpy(f)), f, False)[0] for f in movie])


def test_slow_tracks_bleaching_instead_of_lagging_it():
    movie, slow = _bleaching_movie()
    late = slice(30, None)
    corrected = _warmup_slow(movie, tiles=4)
    plain = _warmup_slow(movie, tiles=0)
    # the frame mean of slow against the truth's, frame by frame
    bias_corrected = np.abs(corrected[late].mean(axis=(1, 2)) / slow[late].mean(axis=(1, 2)) - 1)
    bias_plain = np.abs(plain[late].mean(axis=(1, 2)) / slow[late].mean(axis=(1, 2)) - 1)
    assert bias_corrected.max() < 0.03, bias_corrected.max()
    assert bias_plain.max() > 0.06  # even the shortest window (8 frames) lags a 4x fade by more


def test_a_fading_reference_can_be_set_without_pushing_the_frame():
    """A resume gives the cascade its file's first frame as the fading's reference, then the
    frames the file ends with: their gain is measured against that first frame."""
    cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8,), bleach_tiles=2, work_size=16)
    c = Cascade(cfg, history=8, warmup_steps=10**6)
    first = torch.full((32, 32), 400.0)
    c.set_fading_reference(first)
    assert c.ring.count == 0 and c.factor == 2  # nothing pushed; binned as the frames will be
    out = c.infer(first * 0.5)  # half as bright as the reference: a jump taken at once
    np.testing.assert_allclose(out.gain.numpy(), 0.5, rtol=1e-5)
