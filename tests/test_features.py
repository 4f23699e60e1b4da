"""The slow stage's temporal features: causal windowed statistics (clipped means)
kept in the ring, and a slow network that starts from the longest of them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig
from lagsplit.engine.features import clipped_mean
from lagsplit.engine.ring import sort_over_time, temporal_median


def test_untrained_slow_network_returns_the_longest_window_statistic(noise_stack):
    cfg = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", windows=(3, 8), bleach_tiles=0,
                      slow_skip=True, gate_decay=0)
    c = Cascade(cfg, history=16, warmup_steps=0)  # networks used from the first full window
    outs = [c.infer(torch.from_numpy(f.astype(np.float32))) for f in noise_stack]
    t = len(noise_stack) - 1
    # slow for target t is the 8-frame clipped mean of the frames up to t - 4
    window = (noise_stack[t - 4 - 7 : t - 4 + 1].astype(np.float32) - c.norm.offset) / c.norm.scale
    want, _ = clipped_mean(torch.from_numpy(window), cfg.clip)
    assert not outs[-1].warmup
    assert torch.allclose(outs[-1].slow, want * c.norm.scale + c.norm.offset, atol=1e-3)


def test_at_least_one_window_is_required():
    with pytest.raises(ValueError, match="at least one window"):
        ModelConfig(windows=())


def test_clipped_mean_cuts_spots_and_averages_the_rest():
    rng = np.random.default_rng(0)
    stack = rng.normal(100.0, 5.0, (64, 32, 32)).astype(np.float32)
    stack[::4, 10:14, 10:14] += 200.0  # a spot over a quarter of the frames
    mean, noise = clipped_mean(torch.from_numpy(stack), clip=2.0)
    # spots are cut: the spotted pixels come out like the rest, near the true 100
    assert abs(float(mean[10:14, 10:14].mean()) - 100.0) < 1.5
    assert abs(float(mean.mean()) - 100.0) < 0.5
    # and the kept values are averaged: far less noisy than one frame (5) or a median of 64
    assert float(mean[20:, 20:].std()) < 0.8
    assert abs(float(noise[20:, 20:].mean()) - 5.0) < 1.0


def test_clipped_mean_planes_match_the_statistic_of_each_window(noise_stack):
    cfg = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", windows=(3, 8), bleach_tiles=0)
    c = Cascade(cfg, history=16, warmup_steps=1000)
    for t, frame in enumerate(noise_stack):
        out = c.infer(torch.from_numpy(frame.astype(np.float32)))
        for j, w in enumerate((3, 8)):
            window = (noise_stack[max(0, t - w + 1) : t + 1].astype(np.float32) - c.norm.offset) / c.norm.scale
            want, _ = clipped_mean(torch.from_numpy(window), cfg.clip)
            got = c.ring.plane(c.features.first + j, out.position)
            assert torch.allclose(got, want, atol=1e-5), (t, w)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 9, 16, 31, 32, 33, 64])
def test_sort_over_time_sorts_every_pixel_like_torch_sort(n):
    # the CPU path is a sorting network: every frame count up to NETWORK_MAX, with ties
    g = torch.Generator().manual_seed(n)
    stack = torch.randint(0, 6, (n, 9, 7), generator=g).float() + torch.randn(n, 9, 7, generator=g) * (n % 2)
    want = stack.sort(dim=0).values
    got = sort_over_time(stack)
    assert torch.equal(got, want)
    assert torch.equal(temporal_median(stack), stack.median(dim=0).values if n % 2 else 0.5 * (want[n // 2 - 1] + want[n // 2]))


def test_sort_over_time_leaves_its_input_alone():
    stack = torch.randn(8, 5, 5)
    before = stack.clone()
    sort_over_time(stack)
    assert torch.equal(stack, before)
