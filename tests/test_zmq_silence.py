"""A ZeroMQ source that hears nothing says so, on real loopback sockets: a host that does not
resolve is refused before the run, a missing sender is logged within seconds, and an idle
timeout before any frame fails the run (exit 1) leaving no file."""
from __future__ import annotations

import logging
import re
import socket
import threading
import time

import numpy as np
import pytest
import zmq
from typer.testing import CliRunner

from lagsplit.adapters.publish import Publisher
from lagsplit.adapters.wire import encode_end, encode_image, encode_start
from lagsplit.adapters.zmq_source import EndpointError, NothingReceived, ZmqAdapter
from lagsplit.cli import app
from tests.support import FAST_CLI

FRAME = np.arange(8 * 8, dtype=np.uint16).reshape(8, 8)


def _free_port() -> int:
    """A loopback port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_host_that_does_not_resolve_is_refused_when_the_socket_is_made(ctx):
    with pytest.raises(EndpointError, match=r"cannot connect tcp://nohost\.invalid:5999: the host "
                                            r"'nohost\.invalid' cannot be resolved"):
        ZmqAdapter("tcp://nohost.invalid:5999", context=ctx)
    with pytest.raises(EndpointError, match="'nohost.invalid' cannot be resolved"):
        Publisher("tcp://nohost.invalid:5999", bind=False, context=ctx)
    # a bind names an interface, not a host to reach: not looked up
    ZmqAdapter("tcp://127.0.0.1:*", context=ctx).close()


def test_attach_to_a_host_that_does_not_resolve_fails_before_the_run(tmp_path):
    out = tmp_path / "sub" / "un.h5"
    res = CliRunner().invoke(app, ["attach", "tcp://nohost.invalid:5999", "--out", str(out), "--idle-timeout", "2",
                                   *FAST_CLI])
    assert res.exit_code == 2, res.output
    assert "tcp://nohost.invalid:5999" in res.output and "cannot be resolved" in res.output
    assert "finished" not in res.output and "listening" not in res.output  # no run started
    assert list(tmp_path.iterdir()) == []  # no file, no output folder


@pytest.mark.parametrize("receiver", ["connect", "bind"])
def test_no_sender_is_logged_within_seconds_repeated_sparingly_and_cleared_when_one_comes(ctx, caplog, receiver):
    if receiver == "connect":  # nothing listens where the receiver connects
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        adapter = ZmqAdapter(endpoint, bind=False, context=ctx, poll_s=0.02, notice_s=0.3, notice_every_s=0.8)
    else:  # the receiver listens and nobody connects
        adapter = ZmqAdapter("tcp://127.0.0.1:*", context=ctx, poll_s=0.02, notice_s=0.3, notice_every_s=0.8)
        endpoint = adapter.endpoint
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.extend(f.index for f in adapter))
    sender = None
    try:
        with caplog.at_level(logging.INFO, logger="lagsplit.zmq"):
            t0 = time.monotonic()
            reader.start()
            assert _until(lambda: adapter.waiting() is not None)
            assert adapter.waiting().startswith(f"no sender connected to {endpoint} (")
            time.sleep(1.0)
            alone_s = time.monotonic() - t0
            notices = [r for r in caplog.records if r.getMessage().startswith(f"no sender connected to {endpoint}")]
            assert notices and all(r.levelno == logging.WARNING for r in notices)
            assert len(notices) <= 1 + (alone_s - 0.3) / 0.8  # the first after 0.3 s, then one per 0.8 s at most

            sender = ctx.socket(zmq.PUSH)
            sender.setsockopt(zmq.LINGER, 1000)
            (sender.bind if receiver == "connect" else sender.connect)(endpoint)
            assert _until(lambda: adapter.waiting() is None), "the sender's connection was not seen"
            assert any(r.getMessage() == f"a sender connected to {endpoint}" for r in caplog.records)
            sender.send_multipart(encode_start("s", FRAME.shape, FRAME.dtype))
            sender.send_multipart(encode_image("s", 0, FRAME))
            sender.send_multipart(encode_end("s", 1))
            reader.join(10)
    finally:
        adapter.stop()
        reader.join(5)
        if sender is not None:
            sender.close(linger=0)
        adapter.close()
    assert got == [0]


def test_an_idle_timeout_before_any_frame_raises_saying_nothing_came(ctx):
    adapter = ZmqAdapter(f"tcp://127.0.0.1:{_free_port()}", bind=False, context=ctx, idle_timeout_s=0.3, poll_s=0.02)
    try:
        with pytest.raises(NothingReceived, match=re.escape(f"no frame received from {adapter.endpoint} in 0.3 s: "
                                                            f"nothing sent there?")):
            list(adapter)
    finally:
        adapter.close()


def test_attach_with_no_sender_exits_1_at_the_idle_timeout_and_leaves_nothing(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "sub" / "un.h5"
    res = CliRunner().invoke(app, ["attach", endpoint, "--out", str(out), "--idle-timeout", "2", *FAST_CLI])
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert f"no frame received from {endpoint} in 2 s: nothing sent there?" in last, res.output
    assert "failed" in res.output  # the final status line: the run failed, it did not finish
    assert list(tmp_path.iterdir()) == []  # no file, no checkpoint, no output folder


def test_the_monitor_shows_that_no_sender_is_connected(ctx, small_model):
    """The engine's status carries the source's "no sender connected" line; the monitor's
    log line and panel show it."""
    from rich.console import Console

    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.config import TrainConfig
    from lagsplit.engine.engine import Engine
    from lagsplit.engine.monitor import log_line, render
    from lagsplit.engine.trainer import OnlineTrainer

    adapter = ZmqAdapter("tcp://127.0.0.1:*", context=ctx, poll_s=0.02, notice_s=0.3, notice_every_s=10)
    train = TrainConfig(mode="off")
    cascade = Cascade(small_model, train.history, train.warmup_steps)
    engine = Engine(adapter, cascade, OnlineTrainer(cascade, train))
    engine.start()
    try:
        assert _until(lambda: engine.status().waiting is not None)
        st = engine.status()
        assert st.waiting.startswith(f"no sender connected to {adapter.endpoint}")
        assert st.waiting in log_line(st)
        console = Console(width=200, record=True)
        console.print(render(st))
        assert "no sender connected to" in console.export_text()
    finally:
        engine.stop()
        engine.wait()


@pytest.mark.parametrize("t, origin", [(12.5, "acquisition"), (None, "received")])
def test_the_source_says_whether_its_timestamps_are_the_senders_acquisition_times(ctx, t, origin):
    """Export writes OME DeltaT only from acquisition times: a sender's ``t`` is one, the
    moment a frame was received is not."""
    adapter = ZmqAdapter("tcp://127.0.0.1:*", context=ctx, poll_s=0.02)
    sender = ctx.socket(zmq.PUSH)
    sender.setsockopt(zmq.LINGER, 1000)
    sender.connect(adapter.endpoint)
    try:
        sender.send_multipart(encode_start("s", FRAME.shape, FRAME.dtype))
        sender.send_multipart(encode_image("s", 0, FRAME, t=t))
        sender.send_multipart(encode_end("s", 1))
        frames = list(adapter)
    finally:
        sender.close(linger=0)
        adapter.close()
    assert len(frames) == 1 and adapter.metadata()["timestamp_origin"] == origin
    if t is not None:
        assert frames[0].timestamp == t
