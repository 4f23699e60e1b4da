"""Runs a sink on its own thread behind a bounded queue.

Delivery is lossless: when the queue is full the caller waits (back-pressure),
so a slow disk slows the worker rather than losing rows. An error in the sink is
kept and raised on the caller's next call, naming the sink.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

from .contracts import RunInfo, Sink, check_sink

_STOP = object()


class SinkFailed(RuntimeError):
    pass


class ThreadedSink:
    """Runs a sink on a thread of its own. At most ``maxsize`` messages, and results of at
    most ``max_bytes`` bytes together, wait for it: a full queue blocks the producer."""

    def __init__(self, sink: Sink, maxsize: int = 64, name: str | None = None, max_bytes: int | None = None) -> None:
        self.sink = check_sink(sink)
        self.name = name or type(sink).__name__
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._max_bytes = max_bytes
        self._bytes = 0  # bytes of the results queued
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def __getattr__(self, item: str) -> Any:
        # The optional hooks (contracts.SinkHooks) are forwarded only where the sink has them.
        target = getattr(self.sink, item)
        if not callable(target):
            return target
        return lambda *a, **kw: self._put((item, a, kw))

    def _run(self) -> None:
        while True:
            msg = self._q.get()
            if msg is _STOP:
                return
            if isinstance(msg, threading.Event):  # the producer waits until everything before it is done
                msg.set()
                continue
            if self._error is not None:
                continue  # keep draining so the producer never blocks on a dead sink
            name, args, kwargs = msg
            try:
                getattr(self.sink, name)(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported to the producer
                self._error = exc
            finally:
                if name == "append" and self._max_bytes:
                    with self._room:
                        self._bytes -= args[0].nbytes
                        self._room.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise SinkFailed(f"sink {self.name} failed: {self._error}") from self._error

    def _put(self, msg: Any) -> None:
        self._check()
        while True:
            try:
                self._q.put(msg, timeout=0.5)
                return
            except queue.Full:
                self._check()
                if not self._thread.is_alive():
                    raise SinkFailed(f"sink {self.name} stopped") from None

    @property
    def depth(self) -> int:
        return self._q.qsize()

    def setup(self, info: RunInfo) -> None:
        """Set the sink up on its thread, and wait for it: a sink that refuses the run (a
        resume into a file of another shape) fails here, before any frame is processed, so
        nothing is trained or saved on frames the file will not take."""
        self._put(("setup", (info,), {}))
        done = threading.Event()
        self._put(done)
        while not done.wait(0.5):
            if not self._thread.is_alive():
                raise SinkFailed(f"sink {self.name} stopped")
        self._check()

    def append(self, result) -> None:
        if self._max_bytes:
            n = result.nbytes
            with self._room:
                while self._bytes and self._bytes + n > self._max_bytes:
                    self._check()
                    if not self._thread.is_alive():
                        raise SinkFailed(f"sink {self.name} stopped")
                    self._room.wait(0.5)
                self._bytes += n
        self._put(("append", (result,), {}))

    def skip(self, first_index: int, count: int, reason: str) -> None:
        self._put(("skip", (first_index, count, reason), {}))

    def close(self) -> None:
        """Write everything queued, then close the sink (always, even after an error)."""
        try:
            self._q.put(_STOP)
            self._thread.join()
        finally:
            self.sink.close()
        self._check()
