"""Bounded latency on any machine: the engine measures what each part of its work costs,
sheds optional work in a stated order while a live source outruns it, takes it up again,
and says what it shed (monitor, file, final line)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.config import ModelConfig, RuntimeConfig, TrainConfig
from lagsplit.engine.engine import final_status_line
from lagsplit.engine.monitor import keeping_up, log_line
from lagsplit.engine.shedding import HOLD_FRAMES, SHED_BITS, SHED_ORDER, Shedder, names_of

from .support import run_engine


def _shedder(costs_ms: dict[str, float], interval_ms: float = 50.0, bound_ms: float = 200.0, parts=SHED_ORDER):
    """A shedder that has measured ``costs_ms`` per part and a source at ``interval_ms``."""
    sh = Shedder(bound_ms, parts=parts)
    for t in range(3):
        sh.arrived(t * interval_ms / 1000)
    for _ in range(2):  # the first measurement of each part is left out
        for part, ms in costs_ms.items():
            sh.observe(part, ms / 1000)
    return sh


def test_nothing_is_shed_while_every_part_fits_the_frame_interval():
    sh = _shedder({"frame": 10, "train": 15, "components": 10, "preview": 1})
    assert [sh.plan(0.005, 0) for _ in range(20)] == [()] * 20


def test_parts_are_shed_in_the_stated_order_until_the_rest_fits():
    # 57 ms training steps at 20 frames/s do not fit; without them, the frame does
    assert _shedder({"frame": 20, "train": 57, "components": 5, "preview": 1}).plan(0.01, 0) == ("train",)
    # the component stages too
    assert _shedder({"frame": 20, "train": 30, "components": 40, "preview": 1}).plan(0.01, 0) == ("train", "components")
    # a backlog that would take longer than half the bound to clear sheds more than the interval asks for
    sh = _shedder({"frame": 10, "train": 20, "components": 10, "preview": 5})
    assert sh.plan(0.05, 6) == ("train", "components", "preview")


def test_a_part_a_run_does_not_have_is_never_shed():
    sh = _shedder({"frame": 20, "train": 30, "preview": 30}, parts=("train", "preview"))
    assert sh.plan(0.01, 0) == ("train", "preview")
    with pytest.raises(ValueError, match="cannot shed"):
        Shedder(200, parts=("network",))


def test_work_is_taken_up_again_one_part_at_a_time_once_there_is_room():
    sh = _shedder({"frame": 20, "train": 57, "components": 5, "preview": 1})
    assert sh.plan(0.01, 0) == ("train",)
    sh.observe("train", 0.001)  # the machine got quieter: a step now costs almost nothing
    for _ in range(12):
        sh.observe("train", 0.001)
    plans = [sh.plan(0.005, 0) for _ in range(HOLD_FRAMES + 2)]
    assert plans[: HOLD_FRAMES - 1] == [("train",)] * (HOLD_FRAMES - 1) and plans[-1] == ()


def test_a_replay_as_fast_as_possible_or_a_bound_of_zero_sheds_nothing():
    for sh in (Shedder(200, enabled=False), Shedder(0)):
        sh.observe("frame", 10.0)
        sh.observe("frame", 10.0)
        assert sh.plan(100.0, 50) == ()


def test_the_shed_bits_name_the_parts():
    assert names_of(SHED_BITS["train"] | SHED_BITS["preview"]) == ("train", "preview")


# ---- the real engine ----------------------------------------------------------------------------
def _movie(frames: int = 40, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 100 + 40 * np.sin(xx / 6.0) * np.cos(yy / 5.0)
    return np.stack([rng.poisson(base + 200 * np.exp(-((yy - 30) ** 2 + (xx - t % size) ** 2) / 4.0))
                     for t in range(frames)]).astype(np.uint16)


# Every frame is in warm-up (it asks for a training step), and a step on 64 crops costs
# several times the 20 ms between two frames: unshed, each frame waits for a step.
HEAVY = TrainConfig(mode="slack", warmup_steps=10_000, batch=16, crop=64, history=16, max_steps_per_frame=1)
MODEL = ModelConfig(lags=(4, 2, 1), base_channels=16, levels=2, device="cpu", seed=1, work_size=0, windows=(8, 32))


def _live_run(tmp_path, name: str, bound_ms: float):
    path = tmp_path / f"{name}.h5"
    status, _ = run_engine(ArrayStream(_movie(), fps=50), MODEL, HEAVY, path=path,
                           runtime=RuntimeConfig(queue=64, overflow="block", max_latency_ms=bound_ms))
    with h5py.File(path, "r") as f:
        shed = f["frames/shed"][:]
        latency = f["frames/latency_ms"][:]
        names = [str(n) for n in f["counters"].attrs["names"]]
        counters = dict(zip(names, f["counters"][:].tolist()))
    return status, shed, latency, counters


def test_a_live_source_that_outruns_training_keeps_its_latency_bounded_and_the_file_says_what_was_shed(tmp_path):
    unbounded, shed0, latency0, _ = _live_run(tmp_path, "unbounded", 0)
    status, shed, latency, counters = _live_run(tmp_path, "bounded", 300)
    assert unbounded.processed == status.processed == 40  # shedding drops no frame
    assert not shed0.any() and unbounded.shed_train == 0
    assert np.percentile(latency0, 99) > 300  # each frame waited for its step: the queue grew
    assert np.percentile(latency, 99) < 300  # the frames did not wait for steps they could not afford
    assert status.shed_train > 0 and int(np.count_nonzero(shed & SHED_BITS["train"])) == status.shed_train
    assert {p: counters[f"shed_{p}"] for p in SHED_ORDER} == {
        p: int(np.count_nonzero(shed & SHED_BITS[p])) for p in SHED_ORDER}
    assert not (shed & SHED_BITS["components"]).any()  # no components asked for: none to shed
    line = final_status_line(status)
    assert "to hold latency under 300 ms, skipped training steps on" in line
    assert "training steps on" in log_line(status) and "falling behind" not in keeping_up(status)


def test_frames_whose_component_stages_were_shed_have_zero_components_and_say_so(tmp_path, noise_stack):
    """A bound no frame can meet: every optional part is shed on every frame, and the file
    says so; slow and fast still come for every frame."""
    path = tmp_path / "tight.h5"
    trained = TrainConfig(mode="slack", warmup_steps=2, batch=2, crop=16, history=16)
    model = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", seed=3)
    status, _ = run_engine(ArrayStream(noise_stack, fps=200), model, trained, path=path, components=True,
                           runtime=RuntimeConfig(overflow="block", max_latency_ms=1e-6))
    assert status.processed == len(noise_stack) and status.shed_components == len(noise_stack)
    with h5py.File(path, "r") as f:
        shed = f["frames/shed"][:]
        assert (shed == SHED_BITS["train"] | SHED_BITS["components"] | SHED_BITS["preview"]).all()
        raw, slow = f["raw"][:].astype(np.float32), f["slow"][:]
        for lag in (2, 1):
            assert not f[f"components/lag_{lag}"][:].any()
        np.testing.assert_allclose(f["components/residual"][:], raw - slow, atol=1e-3)
        np.testing.assert_allclose(slow + f["fast"][:], raw, atol=1e-3)
    assert status.preview is None  # no preview was made


def test_under_the_drop_policy_a_frame_already_late_with_everything_shed_is_dropped_and_recorded(tmp_path, noise_stack):
    """Even the slow stage cannot meet a bound of 1 µs: frames that waited past it are dropped
    (counted, recorded as gaps) under "drop", and every frame is in the file or a gap;
    under "block" none is dropped."""
    model = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", seed=3)
    train = TrainConfig(mode="slack", warmup_steps=2, batch=2, crop=16, history=16)
    movie = np.concatenate([noise_stack] * 4)
    runs = {}
    for overflow in ("drop", "block"):
        path = tmp_path / f"{overflow}.h5"
        status, _ = run_engine(ArrayStream(movie, fps=400), model, train, path=path,
                               runtime=RuntimeConfig(queue=64, overflow=overflow, max_latency_ms=1e-3))
        with h5py.File(path, "r") as f:
            rows = f["frames/index"][:]
            gaps = [(int(a), int(n)) for a, n, r in zip(f["gaps/first_index"][:], f["gaps/count"][:], f["gaps/reason"][:])]
        runs[overflow] = (status, rows, gaps)
    status, rows, gaps = runs["drop"]
    assert status.dropped > 0 and status.processed + status.dropped == len(movie)
    in_gaps = {a + k for a, n in gaps for k in range(n)}
    assert sorted([*rows.tolist(), *in_gaps]) == list(range(len(movie))), (rows.tolist(), gaps)
    status, rows, _ = runs["block"]
    assert status.dropped == 0 and len(rows) == len(movie)
