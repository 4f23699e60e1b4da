"""Sudden changes (an illumination step, a stage jump): detected from the frames, a new
segment started, and slow back on the new scene within the settling time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lagsplit.adapters.scenes import brownian_scene, jump_scene, step_scene
from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig
from lagsplit.metrics import nrmse

FRAMES, SIZE = 120, 64


def _run(movie: np.ndarray, deferred: bool = False, **model) -> tuple[Cascade, np.ndarray]:
    """Untrained networks (zero head: slow is the longest window's statistic) over ``movie``;
    the detector's own tests run without the bleaching correction, which divides an
    illumination step out before the detector sees it. ``deferred``: the detector decides
    on each frame when the next arrives, as it does on a GPU."""
    cfg = ModelConfig(lags=(8,), base_channels=4, levels=1, device="cpu", **{"bleach_tiles": 0, **model})
    c = Cascade(cfg, history=8, warmup_steps=0)
    c.detector.deferred = deferred
    slow = []
    for frame in movie:
        out = c.infer(torch.from_numpy(frame.astype(np.float32)))
        slow.append(c.to_adu(out, frame, False)[0])
    return c, np.stack(slow)


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "deferred"])
@pytest.mark.parametrize("make", [step_scene, jump_scene], ids=["step", "jump"])
def test_a_sudden_change_is_found_where_it_happened(make, deferred):
    scene = make(frames=FRAMES, size=SIZE, seed=3)
    c, _ = _run(scene.movie, deferred=deferred)
    assert c.changes == [scene.meta["change_at"]]


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "deferred"])
def test_a_moving_sample_is_not_a_change(deferred):
    scene = brownian_scene(frames=FRAMES, size=SIZE, seed=3)
    c, _ = _run(scene.movie, deferred=deferred)
    assert c.changes == []


def test_a_deferred_decision_comes_one_frame_later_and_dated_the_same():
    """On a GPU the detector's statistic reaches the host without stalling the frame: the
    change is found when the frame after the second one above the threshold arrives."""
    scene = step_scene(frames=FRAMES, size=SIZE, seed=3)
    at = scene.meta["change_at"]
    found = {}
    for deferred in (False, True):
        cfg = ModelConfig(lags=(8,), base_channels=4, levels=1, device="cpu", bleach_tiles=0)
        c = Cascade(cfg, history=8, warmup_steps=0)
        c.detector.deferred = deferred
        for t, frame in enumerate(scene.movie):
            c.infer(torch.from_numpy(frame.astype(np.float32)))
            if c.changes and deferred not in found:
                found[deferred] = t
        assert c.changes == [at]
    assert found[True] == found[False] + 1


def test_after_a_change_no_window_reaches_back_across_it():
    scene = step_scene(frames=FRAMES, size=SIZE, seed=3)
    c, _ = _run(scene.movie[:85], windows=(8, 32))
    at = c.changes[0]
    pos = c.ring.count - 1
    assert c.ring.segment_start == at and int(c.ring.segment_of(torch.tensor([pos]))[0]) == at
    stack = torch.from_numpy((scene.movie[at : pos + 1].astype(np.float32) - c.norm.offset) / c.norm.scale)
    from lagsplit.engine.features import clipped_mean

    want, _ = clipped_mean(stack, c.cfg.clip)
    assert torch.allclose(c.features.plane(1, pos), want, atol=1e-5)


def test_slow_settles_on_the_new_scene_instead_of_the_old_one():
    scene = step_scene(frames=FRAMES, size=SIZE, seed=3)
    at = scene.meta["change_at"]
    after = slice(at + 8, FRAMES)
    _, found = _run(scene.movie)
    _, blind = _run(scene.movie, change_ratio=0)
    err_found = nrmse(found[after], scene.slow[after])
    err_blind = nrmse(blind[after], scene.slow[after])
    assert err_found < 0.5 * err_blind, (err_found, err_blind)


def test_with_the_bleaching_correction_an_illumination_step_is_followed_at_once():
    scene = step_scene(frames=FRAMES, size=SIZE, seed=3)
    at = scene.meta["change_at"]
    just_after = slice(at + 1, at + 8)  # before the detector could even have confirmed a change
    corrected_c, corrected = _run(scene.movie, bleach_tiles=4)
    _, detected = _run(scene.movie)
    assert corrected_c.changes == []  # nothing left to detect: the step is divided out
    err_corrected = nrmse(corrected[just_after], scene.slow[just_after])
    err_detected = nrmse(detected[just_after], scene.slow[just_after])
    assert err_corrected < 0.5 * err_detected, (err_corrected, err_detected)


def test_the_few_frames_after_a_change_are_denoised_by_a_narrowing_blur():
    """Right after a change slow rests on a handful of frames; blurring them by
    settle_blur / sqrt(n) px brings slow closer to the truth than the bare statistic."""
    scene = jump_scene(frames=FRAMES, size=SIZE, seed=3)
    at = scene.meta["change_at"]
    settling = slice(at + 3, at + 24)
    _, bare = _run(scene.movie, settle_blur=0)
    _, blurred = _run(scene.movie)
    err_bare = nrmse(bare[settling], scene.slow[settling])
    err_blurred = nrmse(blurred[settling], scene.slow[settling])
    assert err_blurred < 0.85 * err_bare, (err_blurred, err_bare)
    late = slice(FRAMES - 8, FRAMES)  # n = 30 and more: sigma 0.55 px or less, slow stays sharp
    assert nrmse(blurred[late], bare[late]) < 0.2


def test_the_engine_counts_a_change_and_the_file_records_it(tmp_path):
    import h5py

    from lagsplit.adapters.synthetic import ArrayStream
    from lagsplit.app import build_run
    from lagsplit.config import load_config
    from lagsplit.engine.hdf5_sink import read_counters

    scene = jump_scene(frames=FRAMES, size=SIZE, seed=3)
    out = tmp_path / "jump.h5"
    cfg = load_config(None, overrides=["model.lags=[8]", "model.base_channels=4", "model.levels=1", "train.mode=off",
                                  "monitor.mode=off", f"output.path={out.as_posix()!r}"])
    run = build_run(cfg, ArrayStream(scene.movie, name="jump"))
    status = run.engine.run()
    assert status.error is None and status.changes == 1
    with h5py.File(out, "r") as f:
        assert read_counters(f)["changes"] == 1


def test_the_change_is_logged_with_its_own_frame_number_across_a_gap(caplog, tmp_path):
    """Ten frames lost right after the change's first frame: it is found one frame later
    (frame number + 11), and the log names the frame where it began, not that minus one."""
    from lagsplit.adapters.synthetic import ArrayStream
    from lagsplit.app import build_run
    from lagsplit.config import load_config

    scene = jump_scene(frames=FRAMES, size=SIZE, seed=3)
    at = scene.meta["change_at"]

    class Gapped(ArrayStream):
        def __iter__(self):
            for f in super().__iter__():
                if f.index > at:
                    f.index += 10
                yield f

    cfg = load_config(None, overrides=["model.lags=[8]", "model.base_channels=4", "model.levels=1", "train.mode=off",
                                       "monitor.mode=off", f"output.path={(tmp_path / 'gap.h5').as_posix()!r}"])
    with caplog.at_level("WARNING", logger="lagsplit.engine"):
        status = build_run(cfg, Gapped(scene.movie, name="gapped")).engine.run()
    assert status.changes == 1 and status.gaps == 1
    assert f"sudden change detected at frame {at}:" in caplog.text
