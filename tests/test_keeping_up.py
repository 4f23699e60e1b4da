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


def test_the_monitor_shows_progress_and_whether_a_live_run_keeps_up(noise_stack, small_model):
    import dataclasses

    from lagsplit.engine.monitor import keeping_up, log_line, progress

    status, _ = run_engine(ArrayStream(noise_stack), small_model, TrainConfig(mode="off"))
    assert status.total == len(noise_stack) and not status.live
    mid = dataclasses.replace(status, processed=10, dropped=2, rejected=0, out_rate_hz=4.0)
    assert progress(mid) == f"12/{len(noise_stack)} (40%), 0:04 left"  # 18 frames at 4 frames/s
    assert "12/30" in log_line(mid)
    assert keeping_up(mid) == ""  # a replay as fast as possible fills its queue by design
    live = dataclasses.replace(mid, live=True, dropped=0, queue_depth=1, queue_capacity=8)
    assert "keeping up" in keeping_up(live)
    assert "falling behind" in keeping_up(dataclasses.replace(live, queue_depth=6))
    assert "falling behind" in keeping_up(dataclasses.replace(live, dropped=1))
