"""The method's invariants: exact reconstruction, warm-up flags, greedy cascade, preallocated ring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig, TrainConfig
from lagsplit.engine.features import clipped_mean, gaussian_blur, settle_sigma
from lagsplit.engine.ring import Ring
from lagsplit.engine.trainer import OnlineTrainer
from lagsplit.engine.warmup import MIN_SCORED
from tests.support import ListSink, run_engine


def test_slow_plus_fast_and_components_plus_residual_reconstruct_every_frame(noise_stack, small_model, fixed_train):
    sink = ListSink()
    status, _ = run_engine(ArrayStream(noise_stack), small_model, fixed_train, components=True, sinks=[sink])
    assert status.processed == len(noise_stack) == len(sink.results)
    for r, frame in zip(sink.results, noise_stack):
        raw = frame.astype(np.float32)
        np.testing.assert_allclose(r.slow + r.fast, raw, rtol=0, atol=1e-3)
        assert set(r.components) == {4, 2, 1}
        np.testing.assert_allclose(sum(r.components.values()) + r.residual, raw, rtol=0, atol=1e-3)
        assert r.components[4] is r.slow or np.array_equal(r.components[4], r.slow)


def test_warmup_frames_are_flagged_until_ring_and_training_are_ready(noise_stack, small_model, fixed_train):
    sink = ListSink()
    run_engine(ArrayStream(noise_stack), small_model, fixed_train, sinks=[sink])
    warm = [r.warmup for r in sink.results]
    # needs lag 4 + 1 frames in the ring, then 5 training steps (1 per frame)
    assert all(warm[:5]) and not any(warm[12:])
    first_net = warm.index(False)
    assert sink.results[first_net].model_version >= fixed_train.warmup_steps
    versions = [r.model_version for r in sink.results]
    assert versions == sorted(versions) and versions[-1] > versions[0]


@pytest.mark.parametrize("blur", [0.0, 3.0])
def test_warmup_slow_starts_as_the_longest_window_statistic_up_to_the_frame(blur):
    """...blurred by settle_blur / sqrt(frames in the window) px (capped), or not at all,
    until the warm-up candidates have been scored on enough frames (engine/warmup.py)."""
    movie = np.random.default_rng(0).poisson(30, (12, 8, 8)).astype(np.float32)
    cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(3, 6), settle_blur=blur, bleach_tiles=0)
    c = Cascade(cfg, history=4, warmup_steps=100)
    for t in range(4 + MIN_SCORED - 1):  # the first score comes at frame 4 (made at 0, lag 4)
        out = c.infer(torch.from_numpy(movie[t]))
        slow, _, _, _ = c.to_adu(out, movie[t], False)
        window = (movie[max(0, t - 5) : t + 1] - c.norm.offset) / c.norm.scale
        want, _ = clipped_mean(torch.from_numpy(window), cfg.clip)
        want = gaussian_blur(want, settle_sigma(len(window), blur))
        np.testing.assert_allclose(slow, want.numpy() * c.norm.scale + c.norm.offset, atol=1e-3)
        assert out.warmup


def test_shorter_lag_training_never_changes_the_slow_network(noise_stack):
    cfg = ModelConfig(lags=(4, 2), base_channels=4, levels=1)
    c = Cascade(cfg, history=8, warmup_steps=0)
    tr = OnlineTrainer(c, TrainConfig(mode="fixed", batch=2, crop=16, history=8))
    for frame in noise_stack[:12]:
        c.infer(torch.from_numpy(frame.astype(np.float32)))
    before = [p.detach().clone() for p in c.nets[0].parameters()]
    loss = tr._train_stage(1)
    assert loss is not None and np.isfinite(loss)
    for a, b in zip(before, c.nets[0].parameters()):
        assert torch.equal(a, b)
    assert c.stage_steps == [0, 1]


def test_ring_is_allocated_once_and_wraps():
    ring = Ring(capacity=5, channels=2)
    ring.allocate((4, 6))
    ptr = ring.data.data_ptr()
    for i in range(12):
        ring.push(torch.full((4, 6), float(i)))
    assert ring.data.data_ptr() == ptr
    assert ring.count == 12 and ring.oldest() == 7
    got = ring.gather(0, torch.tensor([7, 11]))
    assert got[0, 0, 0] == 7 and got[1, 0, 0] == 11
    assert not ring.holds(6) and ring.holds(11)


def test_nonfinite_frame_is_emitted_and_not_trained_on(noise_stack, small_model, fixed_train):
    movie = noise_stack.astype(np.float32)
    movie[10, 3, 3] = np.nan
    movie[11, :, :] = np.inf
    sink = ListSink()
    status, cascade = run_engine(ArrayStream(movie), small_model, fixed_train, sinks=[sink])
    assert status.processed == len(movie) and status.nonfinite == 2
    assert np.isfinite(sink.results[12].slow).all()  # later frames unaffected
    assert np.isnan(sink.results[10].fast[3, 3])
    assert all(torch.isfinite(p).all() for net in cascade.nets for p in net.parameters())


def test_diverging_step_is_skipped_and_counted(noise_stack, small_model):
    c = Cascade(small_model, history=8, warmup_steps=0)
    tr = OnlineTrainer(c, TrainConfig(mode="fixed", batch=2, crop=16, history=8))
    for frame in noise_stack[:10]:
        c.infer(torch.from_numpy(frame.astype(np.float32)))
    c.ring.data.fill_(float("inf"))  # poison the training data behind the validity flags
    before = [p.detach().clone() for p in c.nets[0].parameters()]
    assert tr.step() is None
    assert tr.skipped >= 1
    for a, b in zip(before, c.nets[0].parameters()):
        assert torch.equal(a, b)


def _trained(cascade: Cascade, movie: np.ndarray, steps: int = 3) -> Cascade:
    trainer = OnlineTrainer(cascade, TrainConfig(mode="fixed", steps_per_frame=steps, batch=2, crop=16, history=8))
    for frame in movie:
        cascade.infer(torch.from_numpy(frame.astype(np.float32)))
        trainer.after_frame(slack=lambda: False)
    return cascade


def test_weights_round_trip_into_a_cascade_of_another_seed(tmp_path, small_model, noise_stack):
    c = _trained(Cascade(small_model, history=8, warmup_steps=0), noise_stack[:12])
    path = tmp_path / "w.pt"
    c.save(str(path))
    c2 = Cascade(small_model.model_copy(update={"seed": small_model.seed + 1}), history=8, warmup_steps=0)
    saved = c.infer_nets or c.nets  # what save() writes: the weights inference uses
    for k in range(len(c.lags)):
        assert not all(torch.equal(a, b) for a, b in zip(saved[k].parameters(), c2.nets[k].parameters()))
    c2.load(str(path))
    for k in range(len(c.lags)):
        for a, b in zip(saved[k].parameters(), c2.nets[k].parameters()):
            assert torch.equal(a, b)
    assert c2.stage_steps == c.stage_steps and c2.stage_steps[0] > 0


@pytest.mark.parametrize(("key", "value"), [("lags", (8, 1)), ("base_channels", 8), ("levels", 2),
                                            ("windows", (8, 16)), ("clip", 3.0), ("slow_skip", False),
                                            ("work_size", 64)])
def test_weights_for_other_network_settings_are_refused(tmp_path, small_model, key, value):
    path = tmp_path / "w.pt"
    Cascade(small_model, history=4, warmup_steps=0).save(str(path))
    other = Cascade(small_model.model_copy(update={key: value}), history=4, warmup_steps=0)
    before = [p.detach().clone() for p in other.nets[0].parameters()]
    with pytest.raises(ValueError, match=rf"w\.pt have model\.{key} = "):
        other.load(str(path))
    assert all(torch.equal(a, b) for a, b in zip(before, other.nets[0].parameters()))


@pytest.mark.parametrize(("n_min", "waiting", "want"), [(0, True, 0), (1, True, 1), (0, False, 3), (1, False, 3)])
def test_slack_mode_trains_only_while_no_frame_waits_beyond_its_minimum(noise_stack, small_model, n_min, waiting, want):
    """min_steps_per_frame = 0 (a live camera) never trains while the next frame waits;
    with no frame waiting, steps go on up to max_steps_per_frame."""
    cfg = TrainConfig(mode="slack", min_steps_per_frame=n_min, max_steps_per_frame=3, batch=2, crop=16, history=16)
    c = Cascade(small_model, history=cfg.history, warmup_steps=0)
    trainer = OnlineTrainer(c, cfg)
    for frame in noise_stack[:20]:
        c.infer(torch.from_numpy(frame.astype(np.float32)))
    assert len(trainer.after_frame(slack=lambda: not waiting)) == want


@pytest.mark.parametrize("stage", [0, 1])
def test_a_frames_network_input_is_the_training_input_of_its_position(noise_stack, stage):
    cfg = ModelConfig(lags=(4, 2), base_channels=4, levels=1, windows=(3, 8))
    c = Cascade(cfg, history=8, warmup_steps=0, components=True)
    for frame in noise_stack:
        out = c.infer(torch.from_numpy(frame.astype(np.float32)))
    pos = out.position
    want = c.stage_inputs(stage, torch.tensor([pos]))
    assert torch.equal(c.frame_inputs(stage, pos), want)
