"""The threaded sink's queue is bounded in bytes as well as in messages, so big frames
cannot pile up in memory behind a slow disk."""
from __future__ import annotations

import threading

import numpy as np

from lagsplit.engine.frame import Decomposition
from lagsplit.engine.threaded_sink import ThreadedSink


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
