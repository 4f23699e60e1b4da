"""A user sees at once when the camera outruns lagsplit, and when a run ends in warm-up."""
from __future__ import annotations

import logging

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.config import RuntimeConfig, TrainConfig
from lagsplit.engine.engine import final_status_line

from .support import run_engine


def test_a_source_that_outruns_the_worker_is_warned_about(noise_stack, small_model, caplog):
    slow_worker = TrainConfig(mode="fixed", steps_per_frame=6, batch=2, crop=16, history=16, warmup_steps=1)
    with caplog.at_level(logging.WARNING, logger="lagsplit.engine"):
        status, _ = run_engine(ArrayStream(noise_stack), small_model, slow_worker,
                               runtime=RuntimeConfig(queue=2, overflow="drop"))
    assert status.dropped > 0
    warnings = [r.getMessage() for r in caplog.records if "falling behind" in r.getMessage()]
    assert warnings and "dropped" in warnings[0]


def test_a_source_the_worker_keeps_up_with_is_not_warned_about(noise_stack, small_model, caplog):
    with caplog.at_level(logging.WARNING, logger="lagsplit.engine"):
        status, _ = run_engine(ArrayStream(noise_stack, fps=20), small_model,
                               TrainConfig(mode="off"), runtime=RuntimeConfig(queue=8, overflow="block"))
    assert status.processed == len(noise_stack)
    assert not [r for r in caplog.records if "falling behind" in r.getMessage()]


def test_the_final_line_says_when_the_run_ended_in_warm_up(noise_stack, small_model):
    status, _ = run_engine(ArrayStream(noise_stack[:10]), small_model, TrainConfig(mode="off"))
    assert status.warmup and "still in warm-up" in final_status_line(status)
    trained = TrainConfig(mode="fixed", steps_per_frame=1, batch=2, crop=16, history=16, warmup_steps=2)
    status, _ = run_engine(ArrayStream(noise_stack), small_model, trained)
    assert not status.warmup and "warm-up" not in final_status_line(status)


def test_a_replay_as_fast_as_possible_is_not_warned_about_its_full_queue(noise_stack, small_model, caplog):
    slow_worker = TrainConfig(mode="fixed", steps_per_frame=6, batch=2, crop=16, history=16, warmup_steps=1)
    with caplog.at_level(logging.WARNING, logger="lagsplit.engine"):
        status, _ = run_engine(ArrayStream(noise_stack), small_model, slow_worker,
                               runtime=RuntimeConfig(queue=2, overflow="block"))
    assert status.processed == len(noise_stack)
    assert not [r for r in caplog.records if "falling behind" in r.getMessage()]
