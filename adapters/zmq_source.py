"""The ``zmq`` adapter: frames received over ZeroMQ in the wire protocol (adapters/wire.py).

PULL (default) is lossless: when the engine falls behind, ZeroMQ's queues fill
and the sender waits. SUB takes what a PUB / XPUB sender broadcasts; a slow
subscriber loses messages (ZeroMQ drops them at the high-water mark) and the
frame-number jump is recorded as a gap.

A message that breaks the protocol is rejected, counted and logged; the socket
stays up. The iterator ends on the ``end`` message, after ``idle_timeout_s``
without any message, or soon after ``stop()``; an idle timeout before any frame came
raises ``NothingReceived`` (the run fails, saying so). While no sender is connected
(the socket's monitor events; for inproc, while no message has come) the log says so
after ``notice_s`` and every ``notice_every_s`` after that, and the ``waiting`` hook
returns that line.
"""
from __future__ import annotations

import logging
import socket as sockets
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import zmq

from lagsplit.engine.frame import Frame

from .peers import WATCHABLE, PeerWatch
from .tally import Tally
from .wire import End, Image, Start, StreamDecoder, WireError

log = logging.getLogger("lagsplit.zmq")

SOCKET_KINDS = ("pull", "sub")


class EndpointError(ValueError):
    """An endpoint that cannot be bound or connected, with the reason."""


class NothingReceived(RuntimeError):
    """The idle timeout ended a stream before any frame came."""


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


def check_host(endpoint: str, resolve: Callable = sockets.getaddrinfo) -> None:
    """EndpointError unless the host of a ``tcp://`` endpoint to connect to resolves.
    ZeroMQ itself resolves it in the background and retries for ever, silently."""
    if not endpoint.startswith("tcp://"):
        return
    rest = endpoint[len("tcp://"):].rpartition(";")[2]  # tcp://SOURCE;HOST:PORT connects from SOURCE
    host = rest.rpartition(":")[0].strip("[]")
    try:
        resolve(host, None, type=sockets.SOCK_STREAM)
    except (sockets.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, sockets.gaierror) else str(exc)
        raise EndpointError(f"cannot connect {endpoint}: the host {host!r} cannot be resolved ({why})") from None


def plug(sock: zmq.Socket, endpoint: str, bind: bool) -> None:
    """Bind or connect ``sock``; errors (a busy port, a host that does not resolve) name the endpoint."""
    if not bind:
        check_host(endpoint)
    try:
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise EndpointError(f"cannot {'bind' if bind else 'connect'} {endpoint}: {exc}") from None


def open_socket(ctx: zmq.Context, kind: int, endpoint: str, bind: bool) -> zmq.Socket:
    """A socket with linger 0, bound or connected; errors name the endpoint."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        plug(sock, endpoint, bind)
    except BaseException:
        sock.close(linger=0)
        raise
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
    busy port or a host that does not resolve fails before the run starts; ``context`` is
    injected in tests (else owned). ``notice_s`` / ``notice_every_s``: seconds without a
    sender before the log says so, and between repeats."""

    live = True  # frames come at the acquisition's pace (contracts.AdapterHooks.live)

    def __init__(self, endpoint: str, socket: str = "pull", bind: bool | None = None,
                 idle_timeout_s: float | None = None, rcvhwm: int = 1000, poll_s: float = 0.05,
                 context: zmq.Context | None = None, clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time, log_first: int = 20, notice_s: float = 3.0,
                 notice_every_s: float = 30.0) -> None:
        if socket not in SOCKET_KINDS:
            raise ValueError(f"socket must be one of {', '.join(SOCKET_KINDS)}, got {socket!r}")
        self.endpoint = check_endpoint(endpoint)
        self.kind = socket
        self.bind = wants_bind(endpoint, bind, default=False)
        self.idle_timeout_s = idle_timeout_s
        self.poll_ms = max(1, int(poll_s * 1000))
        self.clock, self.wallclock = clock, wallclock
        self._timestamp_origin: str | None = None  # "acquisition" (the sender's "t") or "received"
        self.log_first = log_first
        self._own_ctx = context is None
        self._ctx = context if context is not None else zmq.Context()
        self._stop = threading.Event()
        self._decoder = StreamDecoder()
        self._tally = Tally()
        self.ended: End | None = None
        self.notice_s, self.notice_every_s = notice_s, notice_every_s
        self._frames = self._messages = 0  # frames yielded, messages received
        self._alone_since: float | None = None  # no sender since then (None: one is there)
        self._noticed: float | None = None  # when the log last said so
        self._sock: zmq.Socket | None = self._ctx.socket(zmq.PULL if socket == "pull" else zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if socket == "sub":
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._peers: PeerWatch | None = None
        try:
            if endpoint.partition("://")[0] in WATCHABLE:  # watched before it connects: no connection unseen
                self._peers = PeerWatch(self._sock)
            plug(self._sock, endpoint, self.bind)
        except BaseException:
            self.close()
            raise
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
                 "timestamp_origin": self._timestamp_origin,
                 "pixel_size_um": None if s.pixel_size_um is None else [s.pixel_size_um, s.pixel_size_um]}
        return {k: v for k, v in found.items() if v is not None}

    def lost(self) -> dict[int, str]:
        """Frame numbers rejected since the last call (the engine records them as gaps of that reason)."""
        return self._tally.lost()

    def counters(self) -> dict[str, int]:
        """``received``: image messages and anything rejected; ``rejected``: messages that broke the protocol."""
        return self._tally.counters()

    def waiting(self) -> str | None:
        """While no sender has been connected for ``notice_s`` or more: a line saying so
        (for the monitor); else None. Called from any thread."""
        since = self._alone_since
        if since is None or self.clock() - since < self.notice_s:
            return None
        return self._alone_line(self.clock() - since)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Close the socket (linger 0) and, when it is ours, the context. Call after iteration ended."""
        self._stop.set()
        if self._peers is not None:
            self._peers.close()
            self._peers = None
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
        start = last = self.clock()
        self._alone_since = start
        while not self._stop.is_set():
            if not poller.poll(self.poll_ms):
                now = self.clock()
                self._watch_peers(now)
                if self.idle_timeout_s is not None and now - last >= self.idle_timeout_s:
                    if not self._frames:
                        raise NothingReceived(self._nothing_line(now - start if self._messages else
                                                                 self.idle_timeout_s))
                    log.warning("no message for %g s on %s: ending", self.idle_timeout_s, self.endpoint)
                    return
                continue
            try:
                parts = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            last = self.clock()
            self._messages += 1
            self._watch_peers(last, message=True)
            try:
                msg = self._decoder.decode(parts)
            except WireError as exc:
                self._reject(str(exc), exc.frame)
                continue
            if isinstance(msg, Image):
                self._tally.received()
                self._frames += 1
                meta = dict(msg.meta)
                meta["series"] = msg.series
                if self._timestamp_origin is None:  # the sender's times, or when frames came
                    self._timestamp_origin = "acquisition" if msg.t is not None else "received"
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
    def _watch_peers(self, now: float, message: bool = False) -> None:
        """Follow whether a sender is there (a connection up, or a message just came; for inproc,
        any message so far); say so in the log after ``notice_s`` alone, then every ``notice_every_s``."""
        if message:
            there = True
        elif self._peers is not None:
            there = self._peers.poll() > 0
        else:
            there = self._messages > 0
        if there:
            if self._noticed is not None:
                log.info("a sender connected to %s", self.endpoint)
            self._alone_since = self._noticed = None
            return
        if self._alone_since is None:
            self._alone_since = now
        alone = now - self._alone_since
        if alone >= self.notice_s and (self._noticed is None or now - self._noticed >= self.notice_every_s):
            self._noticed = now
            log.warning("%s", self._alone_line(alone))

    def _alone_line(self, seconds: float) -> str:
        if self._peers is None:
            return f"no sender connected to {self.endpoint}: no message in {seconds:.0f} s"
        return f"no sender connected to {self.endpoint} ({seconds:.0f} s)"

    def _nothing_line(self, seconds: float) -> str:
        """Why a stream that the idle timeout ended had no frame."""
        if not self._messages:
            return f"no frame received from {self.endpoint} in {round(seconds, 1):g} s: nothing sent there?"
        counts = self._tally.counters()
        return (f"no frame received from {self.endpoint} in {round(seconds, 1):g} s: {self._messages} message(s) came, "
                f"{counts['rejected']} rejected (see the log), none a frame")

    def _reject(self, why: str, frame: int | None = None) -> None:
        n = self._tally.rejected(frame)
        # every rejection is counted; the log shows the first ones, then one in a hundred
        if n <= self.log_first or n % 100 == 0:
            log.warning("rejected message from %s: %s%s", self.endpoint, why,
                        f" ({n} rejected so far)" if n > self.log_first else "")


__all__ = ["EndpointError", "NothingReceived", "ZmqAdapter", "check_endpoint", "check_host", "last_endpoint",
           "open_socket", "plug", "wants_bind"]
