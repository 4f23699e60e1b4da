"""The monitor: a rich panel on a terminal, plain log lines without one, both from the status snapshot."""
from __future__ import annotations

import io
import logging
import re

import numpy as np
from rich.console import Console
from rich.text import Text

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.config import MonitorConfig
from lagsplit.engine.monitor import Monitor, half_blocks, log_line, render
from lagsplit.engine.status import Preview, RunState, Status


def _status(**kw) -> Status:
    base = dict(
        state=RunState.RUNNING, reason=None, source="synthetic:filaments", device="cpu", lags=(8, 4, 2, 1),
        elapsed_s=3.0, received=120, processed=118, rejected=2, dropped=5, gaps=1, nonfinite=0, changes=0, queue_depth=3,
        queue_capacity=32, in_rate_hz=20.0, out_rate_hz=19.5, latency_p50_ms=12.5, latency_p99_ms=40.0,
        train_steps=300, train_rate_hz=55.0, train_skipped=1, loss=(0.21, 0.5, float("nan"), 0.7),
        model_version=300, warmup=False, last_index=117, error=None,
        preview=Preview(117, np.random.rand(48, 48), np.random.rand(48, 48), np.random.rand(48, 48) - 0.5),
    )
    base.update(kw)
    return Status(**base)


def test_panel_shows_rates_queue_latency_counts_training_and_a_preview():
    console = Console(file=io.StringIO(), width=160, color_system="truecolor", force_terminal=True)
    console.print(render(_status(nonfinite=3, changes=4), width=20))
    out = console.file.getvalue()
    plain = Text.from_ansi(out).plain
    for expected in ("20.0 fr/s (120 received)", "19.5 fr/s (118 processed)", "3/32", "p50 12.5 ms", "p99 40.0 ms",
                     "55.0 steps/s", "L8: 0.210", "L2: -", "v300", "cpu", "raw", "slow", "fast"):
        assert expected in plain, expected
    # each count beside its own label, as a whole number (not digits inside another number)
    for label, value in (("dropped", 5), ("rejected", 2), ("gaps", 1), ("non-finite", 3), ("changes", 4)):
        assert re.search(rf"(?<![\w-]){label} +{value}(?!\S)", plain), (label, value, plain)
    assert out.count("▀") == 3 * 20 * 10  # three 20-character previews, 2 pixel rows per character


def test_half_blocks_draws_two_pixel_rows_per_line():
    img = np.zeros((8, 8))
    img[:4] = 1.0
    text = half_blocks(img, width=8, lo=0.0, hi=1.0)
    lines = text.plain.strip("\n").split("\n")
    assert len(lines) == 4 and all(len(line) == 8 for line in lines)
    top = text.spans[0].style
    assert "rgb(255,255,255)" in str(top.color.name if hasattr(top.color, "name") else top.color)


def test_log_line_has_the_same_facts():
    line = log_line(_status())
    for expected in ("frames 118/120", "queue 3/32", "p50 12.5 ms", "dropped 5 rejected 2 gaps 1", "v300", "L8=0.210"):
        assert expected in line


def test_without_a_terminal_the_monitor_logs_plain_lines(noise_stack, small_model, fixed_train, caplog):
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.engine import Engine
    from lagsplit.engine.trainer import OnlineTrainer

    cascade = Cascade(small_model, fixed_train.history, fixed_train.warmup_steps)
    engine = Engine(ArrayStream(noise_stack, fps=100), cascade, OnlineTrainer(cascade, fixed_train), [])
    console = Console(file=io.StringIO(), force_terminal=False)
    mon = Monitor(engine.status, MonitorConfig(mode="auto", log_every_s=0.1), console=console)
    assert mon.mode == "log"
    engine.start()
    with caplog.at_level(logging.INFO, logger="lagsplit.monitor"):
        mon.run(done=lambda: engine.done)
    lines = [r.getMessage() for r in caplog.records if r.name == "lagsplit.monitor"]
    assert len(lines) >= 2
    assert lines[-1].startswith(f"frames {len(noise_stack)}/{len(noise_stack)}")
