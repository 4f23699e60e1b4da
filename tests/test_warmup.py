"""Slow before the networks are in use: the candidate that predicts the frames best, the
fading's gain from the first frames, and slow's level held to a faded frame's."""
from __future__ import annotations

import numpy as np
import torch

from lagsplit.engine.bleach import BleachGain
from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig
from lagsplit.engine.level import LevelMatch, robust_level, tile_blocks


def _sample(size: int, shift: float) -> np.ndarray:
    """A smooth structured sample, moved ``shift`` px to the right."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return 200 + 150 * np.sin((xx - shift) / 4.0) ** 2 * np.cos(yy / 6.0) ** 2


def _warmup_error(speed: float, frames: int = 60, size: int = 48):
    """Slow NRMSE of the warm-up path (frames 30 on) on a sample moving ``speed`` px/frame
    under shot noise, and the error of the longest window's statistic on the same frames."""
    rng = np.random.default_rng(1)
    truth = np.stack([_sample(size, speed * t) for t in range(frames)]).astype(np.float32)
    movie = rng.poisson(truth).astype(np.float32)
    cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(4, 32), bleach_tiles=0)
    c = Cascade(cfg, history=8, warmup_steps=10**6)  # never warm: the warm-up path throughout
    slow, longest = [], []
    for f in movie:
        out = c.infer(torch.from_numpy(f))
        slow.append(c.to_adu(out, f, False)[0])
        plane = c.features.settling_plane(out.position, cfg.settle_blur)
        longest.append(plane.numpy() * c.norm.scale + c.norm.offset)

    def nrmse(est):
        return float(np.sqrt(np.mean((np.stack(est)[30:] - truth[30:]) ** 2)) / truth[30:].std())
    return nrmse(slow), nrmse(longest)


def test_on_a_drifting_sample_warmup_slow_follows_it_instead_of_the_longest_window():
    chosen, longest = _warmup_error(speed=0.2)
    assert chosen < 0.3 * longest, (chosen, longest)


def test_on_a_still_sample_warmup_slow_is_no_worse_than_the_longest_window():
    chosen, longest = _warmup_error(speed=0.0)
    assert chosen <= 1.05 * longest, (chosen, longest)


def test_a_fade_from_the_first_frame_is_followed_from_the_first_frames():
    g = BleachGain(tiles=2)
    base = torch.full((32, 32), 500.0)
    for t in range(40):  # 3 % a frame from the start: 10 % by frame 3
        gain = float(g.gain(base * 0.97 ** t).mean())
        if t >= 4:
            assert abs(gain / 0.97 ** t - 1) < 0.02, (t, gain)


def test_an_unfading_sample_keeps_a_gain_of_one():
    rng = np.random.default_rng(0)
    g = BleachGain(tiles=2)
    gains = [float(g.gain(torch.from_numpy(rng.poisson(100, (64, 64)).astype(np.float32))).mean())
             for _ in range(60)]
    assert max(abs(x - 1) for x in gains) < 0.005


def test_the_robust_level_of_noise_with_spots_is_the_noise_mean():
    rng = np.random.default_rng(2)
    r = torch.from_numpy(rng.normal(0.0, 1.0, (64, 64)).astype(np.float32))
    r[::8, ::8] += 50.0  # bright spots, 1.6 % of the pixels
    level = robust_level(tile_blocks(r, 2))
    assert float(level.abs().max()) < 0.1  # 1,024 values a tile: their noise alone is 0.03
    assert float(r.mean()) > 0.7  # the plain mean would be far off


def test_level_match_corrects_slow_in_proportion_to_the_fade():
    rng = np.random.default_rng(3)
    frame = torch.from_numpy(rng.normal(10.0, 1.0, (32, 32)).astype(np.float32))
    slow = torch.full((32, 32), 9.5)  # 5 % low
    faded, unfaded = torch.full((32, 32), 0.5), torch.ones(32, 32)
    shift = LevelMatch(tiles=2, alpha=1.0).offset(frame, slow, faded)
    assert abs(float((slow + shift).mean()) - float(frame.mean())) < 0.03
    assert float(LevelMatch(tiles=2, alpha=1.0).offset(frame, slow, unfaded).abs().max()) == 0.0
    brighter = LevelMatch(tiles=2, alpha=1.0).offset(frame, slow, torch.full((32, 32), 1.6))  # a lamp turned up
    assert float(brighter.abs().max()) == 0.0
    half = LevelMatch(tiles=2, alpha=1.0).offset(frame, slow, torch.full((32, 32), 1.2 ** -0.5))
    assert abs(float(half.mean()) - 0.5 * float(shift.mean())) < 1e-4  # half way (in log) to the 1.2-fold that gets all of it
