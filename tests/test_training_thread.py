"""Slack mode trains on a thread of its own: a frame's output never waits for a step,
and the worker waits only for ``train.min_steps_per_frame`` steps per frame."""
from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
import torch

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.config import TrainConfig

from .support import run_engine


def _slack(**kw) -> TrainConfig:
    return TrainConfig(mode="slack", batch=2, crop=16, history=16, warmup_steps=5, **kw)


def test_min_steps_per_frame_paces_a_replay_with_the_training_thread(noise_stack, small_model, tmp_path):
    path = tmp_path / "run.h5"
    status, cascade = run_engine(ArrayStream(noise_stack), small_model, _slack(min_steps_per_frame=2), path=path)
    assert status.processed == len(noise_stack)
    # a training pair exists from the frame at the longest lag on: two steps for each of
    # those, the trainer at most one frame behind when the run ends
    first = max(small_model.lags)
    assert status.train_steps >= 2 * (len(noise_stack) - first) - 2
    assert not any(t.name == "lagsplit-trainer" for t in threading.enumerate())  # stopped with the run
    with h5py.File(path, "r") as f:
        versions = f["frames/model_version"][:]
        assert len(f["train/step"]) == status.train_steps  # every step logged, the last ones too
    assert np.all(np.diff(versions) >= 0) and versions[-1] > 0


def test_without_min_steps_the_worker_never_waits_for_training(noise_stack, small_model):
    train = _slack(min_steps_per_frame=0, max_steps_per_frame=1)
    status, cascade = run_engine(ArrayStream(noise_stack), small_model, train)
    assert status.processed == len(noise_stack)
    # at most one step per frame (max_steps_per_frame), however fast the frames came
    assert status.train_steps <= len(noise_stack)


def test_warm_up_ends_within_a_bounded_number_of_frames_without_slack(noise_stack, small_model, tmp_path):
    path = tmp_path / "run.h5"
    train = _slack(min_steps_per_frame=0, max_steps_per_frame=1)
    status, cascade = run_engine(ArrayStream(noise_stack), small_model, train, path=path)
    with h5py.File(path, "r") as f:
        warmup = f["frames/warmup"][:]
    # a training pair from the frame at the longest lag on, a step per frame until warm, the
    # trainer at most one frame behind
    first = max(small_model.lags) + train.warmup_steps + 1
    assert not warmup[first:].any()


def test_the_training_thread_uses_the_slack_between_paced_frames(noise_stack, small_model):
    train = _slack(min_steps_per_frame=0, max_steps_per_frame=3)
    status, _ = run_engine(ArrayStream(noise_stack, fps=30), small_model, train)
    assert status.processed == len(noise_stack)
    # with time between frames, more than the one step per frame warm-up asks for, never
    # more than max_steps_per_frame per frame
    first = max(small_model.lags)
    assert len(noise_stack) - first < status.train_steps <= 3 * (len(noise_stack) - first) + 3


@pytest.mark.parametrize(("mode", "threads", "want"), [("slack", 0, 1), ("off", 0, 1), ("fixed", 0, 2), ("off", 2, 2)])
def test_the_worker_gets_one_torch_thread_unless_it_trains_alone_or_threads_are_set(small_model, mode, threads, want):
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.trainer import OnlineTrainer

    torch.set_num_threads(2)
    try:
        cascade = Cascade(small_model.model_copy(update={"threads": threads}), history=8, warmup_steps=5)
        trainer = OnlineTrainer(cascade, TrainConfig(mode=mode))
        trainer.start()
        trainer.stop()
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(2)
