"""Frames larger than the working grid: the slow stage runs on binned frames, and slow
gets its fine detail back from a robust running mean at full resolution."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig, TrainConfig
from lagsplit.engine.detail import FineDetail, bin_factor, bin_frame, upsample
from lagsplit.engine.trainer import OnlineTrainer


@pytest.mark.parametrize(("shape", "work", "factor"), [((128, 128), 128, 1), ((512, 512), 128, 4),
                                                       ((511, 300), 128, 4), ((2048, 2048), 128, 16),
                                                       ((2048, 2048), 0, 1), ((129, 64), 128, 2)])
def test_bin_factor_brings_the_longest_side_within_the_working_size(shape, work, factor):
    assert bin_factor(shape, work) == factor


def test_binning_averages_blocks_and_upsampling_restores_a_smooth_plane():
    y, x = np.mgrid[0:30, 0:22].astype(np.float32)
    plane = torch.from_numpy(0.5 * y + 0.25 * x)  # linear: bilinear upsampling is exact inside
    binned = bin_frame(plane, 4)
    assert binned.shape == (8, 6)  # partial blocks at the edges are kept
    assert float(binned[0, 0]) == pytest.approx(float(plane[:4, :4].mean()))
    assert float(binned[-1, -1]) == pytest.approx(float(plane[28:, 20:].mean()))
    back = upsample(binned, 4, (30, 22))
    assert back.shape == (30, 22)
    np.testing.assert_allclose(back[2:26, 2:18].numpy(), plane[2:26, 2:18].numpy(), atol=1e-4)


def test_running_mean_leaves_out_passing_spots():
    rng = np.random.default_rng(0)
    fine = FineDetail(factor=4, window=32)
    for t in range(96):
        frame = rng.normal(0.0, 1.0, (32, 32)).astype(np.float32)
        if t % 4 == 0:
            frame[10:12, 10:12] += 20.0  # a bright spot over a quarter of the frames
        fine.update(torch.from_numpy(frame), noise=torch.full((8, 8), 0.25))  # binned by 4: 1 / 4
    # a plain mean would sit at 5 there; the clipped update keeps it near the background
    assert abs(float(fine.mean[10:12, 10:12].mean())) < 1.0
    assert float(fine.mean[16:, 16:].std()) < 0.35  # and averages the noise of the rest


def _line_movie(size: int, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A static sample with 1-px lines (detail that 4 x 4 binning removes), a spot moving
    across it, Poisson noise. Returns (movie, the noise-free static sample)."""
    rng = np.random.default_rng(seed)
    truth = np.full((size, size), 50.0, np.float32)
    truth[:, size // 3] += 60.0
    truth[size // 2, :] += 60.0
    movie = np.empty((frames, size, size), np.float32)
    for t in range(frames):
        frame = truth.copy()
        cy, cx = 8 + (3 * t) % (size - 16), 8 + (5 * t) % (size - 16)
        frame[cy - 1 : cy + 2, cx - 1 : cx + 2] += 300.0
        movie[t] = rng.poisson(frame)
    return movie, truth


def test_slow_of_a_binned_frame_keeps_fine_structure_and_leaves_spots_out():
    movie, truth = _line_movie(64, 80)
    cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8, 32), work_size=16)
    c = Cascade(cfg, history=8, warmup_steps=1000)  # warm-up path: statistic + detail
    assert c.factor == 1
    for frame in movie:
        out = c.infer(torch.from_numpy(frame))
    assert c.factor == 4 and c.ring.shape == (16, 16)
    slow, fast, _, _ = c.to_adu(out, movie[-1], False)
    assert slow.shape == (64, 64)
    np.testing.assert_allclose(slow + fast, movie[-1], atol=1e-3)
    # the 1-px lines are in slow (upsampling the binned statistic alone smears them 4 px wide)
    line = slow[5:-5, 64 // 3]
    assert abs(float(line.mean()) - 110.0) < 6.0
    assert float(np.abs(slow - truth)[4:-4, 4:-4].mean()) < 4.0
    # the spot of the last frame is in fast
    t = len(movie) - 1
    cy, cx = 8 + (3 * t) % 48, 8 + (5 * t) % 48
    assert float(fast[cy, cx]) > 200.0


def test_binned_cascade_trains_and_runs_its_network_on_the_working_grid():
    movie, _ = _line_movie(48, 40)
    cfg = ModelConfig(lags=(4, 2), base_channels=4, levels=1, windows=(8,), work_size=12)
    c = Cascade(cfg, history=8, warmup_steps=2, components=True)
    tr = OnlineTrainer(c, TrainConfig(mode="fixed", batch=2, crop=8, history=8, warmup_steps=2))
    for frame in movie:
        out = c.infer(torch.from_numpy(frame))
        tr.after_frame(slack=lambda: False)
    assert not out.warmup and c.stage_steps[0] >= 2 and c.stage_steps[1] > 0
    slow, fast, comps, residual = c.to_adu(out, movie[-1], True)
    assert slow.shape == fast.shape == residual.shape == (48, 48)
    assert set(comps) == {4, 2} and comps[2].shape == (48, 48)
    np.testing.assert_allclose(sum(comps.values()) + residual, movie[-1], atol=1e-2)


def test_without_components_only_the_slow_stage_runs_and_trains(noise_stack):
    cfg = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, windows=(8,))
    c = Cascade(cfg, history=8, warmup_steps=0)
    tr = OnlineTrainer(c, TrainConfig(mode="fixed", batch=2, crop=16, history=8, stages_per_step="all"))
    for frame in noise_stack[:20]:
        out = c.infer(torch.from_numpy(frame.astype(np.float32)))
        tr.after_frame(slack=lambda: False)
    assert c.stage_steps[0] > 0 and c.stage_steps[1:] == [0, 0]
    assert out.components == [] and out.residual is None


def test_slack_training_takes_a_step_per_frame_until_warm_even_without_slack(noise_stack):
    cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8,))
    c = Cascade(cfg, history=8, warmup_steps=5)
    tr = OnlineTrainer(c, TrainConfig(mode="slack", min_steps_per_frame=0, batch=2, crop=16, history=8,
                                      warmup_steps=5))
    warm_at = None
    for t, frame in enumerate(noise_stack):
        c.infer(torch.from_numpy(frame.astype(np.float32)))
        tr.after_frame(slack=lambda: False)  # the next frame is always waiting
        if c.warm and warm_at is None:
            warm_at = t
    # the first training pair exists at position 4 (lag 4): five steps later it is warm
    assert warm_at == 4 + 5 - 1
    steps = c.stage_steps[0]
    c.infer(torch.from_numpy(noise_stack[0].astype(np.float32)))
    tr.after_frame(slack=lambda: False)
    assert c.stage_steps[0] == steps  # once warm, no slack means no step


@pytest.mark.parametrize("components", [False, True])
def test_a_run_builds_the_shorter_lag_stages_only_for_components(tmp_path, components):
    from lagsplit.app import build_run
    from lagsplit.config import load_config

    cfg = load_config(overrides=[f"output.components={str(components).lower()}", f"output.path={tmp_path / 'r.h5'}",
                                 "monitor.mode=off"])
    run = build_run(cfg)
    try:
        assert run.cascade.stages == (len(cfg.model.lags) if components else 1)
    finally:
        run.engine.stop()
        run.engine.run()


def test_upload_checks_finiteness_on_the_host_and_converts_to_float32():
    c = Cascade(ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8,)), history=8, warmup_steps=0)
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    x, valid = c.upload(raw)
    assert valid and x.dtype == torch.float32 and np.array_equal(x.numpy(), raw.astype(np.float32))
    bad = raw.astype(np.float32)
    bad[1, 2] = np.nan
    assert c.upload(bad)[1] is False
    assert c.upload(np.where(np.isnan(bad), np.inf, bad))[1] is False


@pytest.mark.parametrize(("factor", "shape"), [(2, (30, 22)), (3, (31, 17)), (8, (64, 64)), (4, (13, 1)), (5, (1, 9))])
def test_upsampling_is_torch_bilinear_and_applies_add_then_mul(factor, shape):
    g = torch.Generator().manual_seed(factor)
    small = torch.rand(-(-shape[0] // factor), -(-shape[1] // factor), generator=g)
    add, mul = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    h, w = small.shape
    want = F.interpolate(small[None, None], size=(h * factor, w * factor), mode="bilinear",
                         align_corners=False)[0, 0, : shape[0], : shape[1]]
    torch.testing.assert_close(upsample(small, factor, shape), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(upsample(small, factor, shape, add=add, mul=mul), (want + add) * mul, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("factor", "shape"), [(4, (32, 16)), (8, (64, 128)), (4, (30, 22)), (3, (7, 9))])
def test_binning_is_average_pooling_over_whole_and_partial_blocks(factor, shape):
    plane = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    want = F.avg_pool2d(plane[None, None], factor, ceil_mode=True, count_include_pad=False)[0, 0]
    torch.testing.assert_close(bin_frame(plane, factor), want, atol=1e-6, rtol=0)
