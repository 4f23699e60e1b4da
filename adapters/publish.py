"""The sending end of the wire protocol: a stand-in microscope.

``Publisher`` speaks the protocol on a PUSH socket (lossless: waits for a
receiver, and for room in its queue) or an XPUB socket (broadcast to SUB
receivers; waits for the first subscriber so the ``start`` message is not lost).
``publish_stack`` replays a recorded stack through it at a camera rate:
``lagsplit publish STACK ENDPOINT --fps F``.

Clock, sleep and the ZeroMQ context are injected, so tests neither sleep nor
pick fixed ports.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .stack_metadata import read_acquisition
from .stacks import open_stack
from .wire import encode_end, encode_image, encode_start
from .zmq_source import check_endpoint, last_endpoint, open_socket, wants_bind

log = logging.getLogger("lagsplit.publish")

PUBLISH_SOCKETS = ("push", "pub")


class PublishStopped(RuntimeError):
    """``stop()`` was called while the publisher waited for a receiver or for room to send."""


class Publisher:
    """Sends one series: ``start(shape, dtype)``, ``image(frame, array)`` per frame, ``end()``.

    ``socket``: "push" (default) or "pub". A sender binds unless ``bind`` is False.
    ``close()`` after ``end()`` waits up to ``linger_s`` for queued frames to leave;
    after a stop it drops them.
    """

    def __init__(self, endpoint: str, socket: str = "push", bind: bool | None = None, series: str | None = None,
                 sndhwm: int = 1000, linger_s: float = 10.0, poll_s: float = 0.05,
                 context: zmq.Context | None = None) -> None:
        if socket not in PUBLISH_SOCKETS:
            raise ValueError(f"socket must be one of {', '.join(PUBLISH_SOCKETS)}, got {socket!r}")
        check_endpoint(endpoint)
        self.kind = socket
        self.bind = wants_bind(endpoint, bind, default=True)
        self.series = series or f"lagsplit-{uuid.uuid4().hex[:8]}"
        self.linger_s = linger_s
        self.poll_ms = max(1, int(poll_s * 1000))
        self.sent = 0
        self.dropped = 0
        self._ended = False
        self._started = False
        self._stop = threading.Event()
        self._subscribed = False
        self._own_ctx = context is None
        self._ctx = context if context is not None else zmq.Context()
        try:
            self._sock: zmq.Socket | None = open_socket(
                self._ctx, zmq.PUSH if socket == "push" else zmq.XPUB, endpoint, self.bind)
        except BaseException:
            if self._own_ctx:
                self._ctx.term()
            raise
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.endpoint = last_endpoint(self._sock, endpoint) if self.bind else endpoint

    def describe(self) -> str:
        return f"{self.kind} {'bound to' if self.bind else 'connected to'} {self.endpoint}"

    # ---- waiting --------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until a receiver can take messages: a connected PULL peer (PUSH), or a first
        subscription (PUB). False on timeout; raises PublishStopped after stop()."""
        sock = self._socket()
        end = None if timeout_s is None else time.monotonic() + timeout_s
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN if self.kind == "pub" else zmq.POLLOUT)
        while not (self.kind == "pub" and self._subscribed):
            if self._stop.is_set():
                raise PublishStopped("stopped while waiting for a receiver")
            wait = self.poll_ms if end is None else max(0, min(self.poll_ms, int((end - time.monotonic()) * 1000)))
            ready = dict(poller.poll(wait))
            if sock in ready:
                if self.kind == "push":
                    return True
                self._drain_subscriptions()
                continue
            if end is not None and time.monotonic() >= end:
                return False
        return True

    def _drain_subscriptions(self) -> None:
        sock = self._socket()
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._subscribed = True

    # ---- the series ---------------------------------------------------------------------------
    def start(self, shape: tuple[int, int], dtype: Any, frame_interval_s: float | None = None,
              timeout_s: float | None = None, pixel_size_um: float | None = None, channel: str | None = None) -> None:
        """Send ``start`` (after waiting for a receiver); every image must have this shape and dtype."""
        if not self.wait_ready(timeout_s):
            raise TimeoutError(f"no receiver on {self.endpoint} within {timeout_s:g} s")
        self._send(encode_start(self.series, shape, dtype, frame_interval_s, pixel_size_um, channel), None)
        self._started = True

    def image(self, frame: int, array: np.ndarray, t: float | None = None, meta: dict | None = None,
              timeout_s: float | None = None, stamp: bool = True) -> bool:
        """Send one frame; ``t`` is its acquisition time in seconds (epoch, or from the first
        frame); None: now (a camera's frame, sent as it is taken), or with ``stamp`` False no
        time at all (the receiver then marks its times as when it received the frames). With
        ``timeout_s``, a frame that cannot leave in time is dropped and counted (the receiver
        sees the gap); False then."""
        if t is None and stamp:
            t = time.time()
        parts = encode_image(self.series, frame, array, t=t, meta=meta)
        if self._send(parts, timeout_s):
            self.sent += 1
            return True
        self.dropped += 1
        return False

    def end(self, frames: int | None = None) -> None:
        """Send ``end``; ``frames`` defaults to the number of images sent."""
        self._send(encode_end(self.series, self.sent if frames is None else frames), None)
        self._ended = True

    def stop(self) -> None:
        """Give up waiting (from another thread): pending sends raise PublishStopped."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Close the socket; after ``end()`` wait up to ``linger_s`` for queued messages to leave."""
        if self._sock is not None:
            linger = int(self.linger_s * 1000) if self._ended and not self._stop.is_set() else 0
            self._sock.close(linger=linger)
            self._sock = None
        if self._own_ctx and not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ----------------------------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            raise RuntimeError(f"publisher on {self.endpoint} is closed")
        return self._sock

    def _send(self, parts: list, timeout_s: float | None) -> bool:
        """Send when the socket has room, checking stop() every poll; False after ``timeout_s``."""
        sock = self._socket()
        end = None if timeout_s is None else time.monotonic() + timeout_s
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLOUT)
        while True:
            if self._stop.is_set():
                raise PublishStopped("stopped while waiting to send")
            if self.kind == "pub":
                self._drain_subscriptions()
            if poller.poll(self.poll_ms):
                try:
                    sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                    return True
                except zmq.Again:
                    pass
            if end is not None and time.monotonic() >= end:
                return False


@dataclass
class PublishReport:
    """What ``publish_stack`` did: frames sent, seconds it took, frames that left late
    (more than one frame interval behind the camera clock), and whether it was stopped."""

    frames: int
    seconds: float
    late: int
    stopped: bool
    endpoint: str


def publish_stack(stack: str, publisher: Publisher, fps: float = 0.0, start: int = 0, stop: int | None = None,
                  wait_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep, channel: int | None = None, z: int | None = None,
                  axes: str | None = None) -> PublishReport:
    """Replay ``stack`` (TIFF, .npy, FILE.h5:/dataset; ``channel`` / ``z`` / ``axes`` pick the
    plane, see adapters/stacks.py) frame by frame through ``publisher`` at ``fps`` (0: as fast
    as the receiver takes them). Frame numbers are stack positions, as in ``lagsplit replay``.
    ``publisher.stop()`` from another thread ends it early; the series is then not ended and
    the publisher drops what it still holds. StackError when the stack cannot be read or
    ``start`` is past its end."""
    with open_stack(stack, channel=channel, z=z, axes=axes) as frames:
        todo = frames.frame_range(start, stop)
        shape, dtype = tuple(int(s) for s in frames.shape[1:]), np.dtype(frames.dtype)
        sent = late = 0
        t0 = clock()
        stopped = False
        try:
            log.info("publishing %s frames %d..%d as series %r on %s", frames.description, todo.start, todo.stop - 1,
                     publisher.series, publisher.describe())
            acq = read_acquisition(stack, channel=channel, z=z)  # the recorded interval, else the play rate's
            publisher.start(shape, dtype, frame_interval_s=acq.frame_interval_s or ((1.0 / fps) if fps else None),
                            timeout_s=wait_s, channel=acq.channel_name,
                            pixel_size_um=acq.pixel_size_um[1] if acq.pixel_size_um else None)
            t0 = clock()
            interval = 1.0 / fps if fps else 0.0
            for k, i in enumerate(todo):
                if interval:
                    due = t0 + k * interval
                    while (left := due - clock()) > 0:
                        if publisher.stopping:
                            raise PublishStopped("stopped")
                        sleep(min(left, 0.05))
                    if clock() - due > interval:
                        late += 1
                # a recorded stack's frames carry their recorded times (seconds from its first);
                # without them no time: the moment a frame is played is not when it was taken
                publisher.image(i, frames[i], t=_recorded_time(acq, i), stamp=False)
                sent += 1
            publisher.end(sent)
        except PublishStopped:
            stopped = True
            log.warning("publishing stopped after %d frame(s)", sent)
    return PublishReport(sent, clock() - t0, late, stopped, publisher.endpoint)


def _recorded_time(acq, i: int) -> float | None:
    """Frame ``i``'s acquisition time as the stack records it (plane times, else the frame
    interval), seconds from its first frame; None when it records neither."""
    if acq.times is not None and i < len(acq.times):
        return float(acq.times[i])
    return i * acq.frame_interval_s if acq.frame_interval_s else None


__all__ = ["PublishReport", "PublishStopped", "Publisher", "publish_stack"]
