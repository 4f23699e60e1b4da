"""The ``zmq`` adapter: frames received over ZeroMQ in the wire protocol (adapters/wire.py).

PULL (default) is lossless: when the engine falls behind, ZeroMQ's queues fill
and the sender waits. SUB takes what a PUB / XPUB sender broadcasts; a slow
subscriber loses messages (ZeroMQ drops them at the high-water mark) and the
frame-number jump is recorded as a gap.

A message that breaks the protocol is rejected, counted and logged; the socket
stays up. The iterator ends on the ``end`` message, after ``idle_timeout_s``
without any message, or soon after ``stop()``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import zmq

from lagsplit.engine.frame import Frame

from .tally import Tally
from .wire import End, Image, Start, StreamDecoder, WireError

log = logging.getLogger("lagsplit.zmq")

SOCKET_KINDS = ("pull", "sub")


class EndpointError(ValueError):
    """An endpoint that cannot be bound or connected, with the reason."""


def check_endpoint(endpoint: str) -> str:
    """A ZeroMQ endpoint such as tcp://HOST:PORT, tcp://*:PORT, ipc://PATH or inproc://NAME."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise EndpointError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT, tcp://*:PORT, ipc://PATH or inproc://NAME")
    if scheme == "tcp" and ":" not in rest:
        raise EndpointError(f"endpoint {endpoint!r}: tcp needs a port, as in tcp://127.0.0.1:5555")
    return endpoint


def wants_bind(endpoint: str, bind: bool | None, default: bool) -> bool:
    """Whether to bind (True) or connect: as asked, else bind a wildcard (``tcp://*:PORT``,
    ``tcp://HOST:*``), else the role's ``default`` (senders bind, receivers connect)."""
    if bind is not None:
        return bind
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://"):].rpartition(":")
        if host in ("*", "0.0.0.0", "[::]") or port == "*":
            return True
    return default


def open_socket(ctx: zmq.Context, kind: int, endpoint: str, bind: bool) -> zmq.Socket:
    """A socket with linger 0, bound or connected; errors name the endpoint."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise EndpointError(f"cannot {'bind' if bind else 'connect'} {endpoint}: {exc}") from None
    return sock


def last_endpoint(sock: zmq.Socket, fallback: str) -> str:
    """The endpoint actually bound (resolves a ``*`` port), or ``fallback``."""
    try:
        ep = sock.getsockopt(zmq.LAST_ENDPOINT)
    except zmq.ZMQError:
        return fallback
    ep = ep.decode() if isinstance(ep, bytes) else str(ep)
    if not ep:
        return fallback
    if fallback.startswith("tcp://") and "://" in ep:
        # keep the host the user wrote (e.g. "*"), with the real port
        host = urlsplit(fallback).netloc.rpartition(":")[0]
        port = ep.rpartition(":")[2]
        return f"tcp://{host}:{port}"
    return ep


class ZmqAdapter:
    """Receives frames over ZeroMQ. The socket is bound or connected at construction, so a
    busy port fails before the run starts; ``context`` is injected in tests (else owned)."""

    live = True  # frames come at the acquisition's pace (contracts.AdapterHooks.live)

    def __init__(self, endpoint: str, socket: str = "pull", bind: bool | None = None,
                 idle_timeout_s: float | None = None, rcvhwm: int = 1000, poll_s: float = 0.05,
                 context: zmq.Context | None = None, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time, log_first: int = 20) -> None:
        if socket not in SOCKET_KINDS:
            raise ValueError(f"socket must be one of {', '.join(SOCKET_KINDS)}, got {socket!r}")
        self.endpoint = check_endpoint(endpoint)
        self.kind = socket
        self.bind = wants_bind(endpoint, bind, default=False)
        self.idle_timeout_s = idle_timeout_s
        self.poll_ms = max(1, int(poll_s * 1000))
        self.clock, self.wallclock = clock, wallclock
        self.log_first = log_first
        self._own_ctx = context is None
        self._ctx = context if context is not None else zmq.Context()
        self._stop = threading.Event()
        self._decoder = StreamDecoder()
        self._tally = Tally()
        self.ended: End | None = None
        try:
            self._sock: zmq.Socket | None = open_socket(
                self._ctx, zmq.PULL if socket == "pull" else zmq.SUB, endpoint, self.bind)
        except BaseException:
            if self._own_ctx:
                self._ctx.term()
            raise
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if socket == "sub":
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoint = last_endpoint(self._sock, endpoint) if self.bind else endpoint

    # ---- Adapter ------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"zmq {self.kind} {'bound to' if self.bind else 'connected to'} {self.endpoint}"

    def open(self) -> None:
        if self._sock is None:
            raise RuntimeError(f"{self.describe()}: the adapter is closed")
        log.info("listening: %s", self.describe())

    def metadata(self) -> dict:
        """Frame interval, pixel size and channel name of the running series' ``start`` message
        (AdapterHooks.metadata); {} before a series starts."""
        s = self._decoder.series
        if s is None:
            return {}
        found = {"frame_interval_s": s.frame_interval_s or None, "channel_name": s.channel,
                 "pixel_size_um": None if s.pixel_size_um is None else [s.pixel_size_um, s.pixel_size_um]}
        return {k: v for k, v in found.items() if v is not None}

    def lost(self) -> dict[int, str]:
        """Frame numbers rejected since the last call (the engine records them as gaps of that reason)."""
        return self._tally.lost()

    def counters(self) -> dict[str, int]:
        """``received``: image messages and anything rejected; ``rejected``: messages that broke the protocol."""
        return self._tally.counters()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Close the socket (linger 0) and, when it is ours, the context. Call after iteration ended."""
        self._stop.set()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._own_ctx and not self._ctx.closed:
            self._ctx.term()

    def __iter__(self) -> Iterator[Frame]:
        sock = self._sock
        if sock is None:
            raise RuntimeError(f"{self.describe()}: the adapter is closed")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        last = self.clock()
        while not self._stop.is_set():
            if not poller.poll(self.poll_ms):
                if self.idle_timeout_s is not None and self.clock() - last >= self.idle_timeout_s:
                    log.warning("no message for %g s on %s: ending", self.idle_timeout_s, self.endpoint)
                    return
                continue
            try:
                parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            last = self.clock()
            try:
                msg = self._decoder.decode(parts)
            except WireError as exc:
                self._reject(str(exc), exc.frame)
                continue
            if isinstance(msg, Image):
                self._tally.received()
                meta = dict(msg.meta)
                meta["series"] = msg.series
                yield Frame(index=msg.frame, timestamp=msg.t if msg.t is not None else self.wallclock(),
                            array=msg.array, meta=meta)
            elif isinstance(msg, Start):
                if not msg.repeated:
                    log.info("series %r started: %dx%d %s%s", msg.series, *msg.shape, msg.dtype.str,
                             f", every {msg.frame_interval_s:g} s" if msg.frame_interval_s else "")
            elif isinstance(msg, End):
                self.ended = msg
                counts = self._tally.counters()
                got = counts["received"] - counts["rejected"]
                note = "" if msg.frames is None or msg.frames == got else f" (sender says {msg.frames} sent)"
                log.info("series %r ended after %d frame(s)%s", msg.series, got, note)
                return

    # ---- internals ----------------------------------------------------------------------------
    def _reject(self, why: str, frame: int | None = None) -> None:
        n = self._tally.rejected(frame)
        # every rejection is counted; the log shows the first ones, then one in a hundred
        if n <= self.log_first or n % 100 == 0:
            log.warning("rejected message from %s: %s%s", self.endpoint, why,
                        f" ({n} rejected so far)" if n > self.log_first else "")


__all__ = ["EndpointError", "ZmqAdapter", "check_endpoint", "last_endpoint", "open_socket", "wants_bind"]
