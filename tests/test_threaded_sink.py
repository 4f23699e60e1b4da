"""The threaded sink's queue is bounded in bytes as well as in messages, so big frames
cannot pile up in memory behind a slow disk."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from lagsplit.engine.frame import Decomposition
from lagsplit.engine.threaded_sink import SinkFailed, ThreadedSink


class GatedSink:
    """Takes results only while its gate is open."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.taken: list[int] = []

    def setup(self, info): ...
    def skip(self, first, count, reason): ...
    def close(self): ...

    def append(self, r):
        self.gate.wait()
        self.taken.append(r.index)


def _result(i: int) -> Decomposition:
    a = np.zeros((256, 256), np.float32)  # 256 KiB per array, 768 KiB per result
    return Decomposition(index=i, timestamp=0.0, raw=a, slow=a, fast=a, components=None, residual=None,
                         model_version=0, warmup=False, latency_ms=0.0)


def test_a_full_byte_budget_blocks_the_producer_until_the_writer_catches_up():
    inner = GatedSink()
    sink = ThreadedSink(inner, maxsize=100, max_bytes=2 * 768 * 1024)
    appended: list[int] = []

    def produce():
        for i in range(5):
            sink.append(_result(i))
            appended.append(i)

    t = threading.Thread(target=produce)
    t.start()
    t.join(0.5)
    # one result in the writer's hands, two queued: the fourth waits for room
    assert t.is_alive() and len(appended) <= 3
    inner.gate.set()
    t.join(5)
    sink.close()
    assert not t.is_alive() and appended == list(range(5)) and inner.taken == list(range(5))


class RefusingSink(GatedSink):
    """Refuses the run when set up, after a while (a file checked on a slow disk)."""

    def setup(self, info):
        threading.Event().wait(0.3)
        raise ValueError("it holds frames of 20 x 32 px")


def test_setup_waits_for_the_sink_and_raises_its_refusal_before_any_frame():
    sink = ThreadedSink(RefusingSink())
    with pytest.raises(SinkFailed, match="sink RefusingSink failed: it holds frames of 20 x 32 px"):
        sink.setup(None)  # not on the next call, after frames were processed
    with pytest.raises(SinkFailed):
        sink.close()  # the thread ends; the failure is still reported
