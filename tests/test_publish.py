"""`lagsplit publish`, the stand-in microscope: pacing at a camera rate, waiting for a receiver,
and the promise that publish + attach on one machine gives the file `lagsplit replay` gives."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import tifffile
import zmq
from typer.testing import CliRunner

from lagsplit.adapters.publish import Publisher, PublishStopped, publish_stack
from lagsplit.adapters.wire import Image, Start, StreamDecoder
from lagsplit.cli import app
from tests.support import FAST_CLI, FakeClock


def _pull(ctx, endpoint):
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _receive_all(sock, timeout_s=10.0):
    dec, msgs = StreamDecoder(), []
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    while True:
        msg = dec.decode(sock.recv_multipart())
        msgs.append(msg)
        if not isinstance(msg, (Start, Image)):
            return msgs


def test_publish_stack_paces_frames_at_the_camera_rate_without_real_sleeps(ctx, tmp_path, noise_stack):
    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, noise_stack)
    clock = FakeClock()
    pub = Publisher("tcp://127.0.0.1:*", series="paced", context=ctx)
    pull = _pull(ctx, pub.endpoint)
    try:
        report = publish_stack(str(stack), pub, fps=20, start=2, stop=12, clock=clock, sleep=clock.sleep)
        msgs = _receive_all(pull)
    finally:
        pub.close()
        pull.close(linger=0)
    assert (report.frames, report.late, report.stopped) == (10, 0, False)
    assert clock.slept == pytest.approx(9 / 20)  # frame k leaves at k/fps after the first
    start, *images, end = msgs
    assert start.series == "paced" and start.frame_interval_s == pytest.approx(0.05)
    assert [m.frame for m in images] == list(range(2, 12))
    assert all(m.t is None for m in images)  # a stack without recorded times: the play time is not sent as one
    np.testing.assert_array_equal(np.stack([m.array for m in images]), noise_stack[2:12])
    assert end.frames == 10


def test_publish_stack_sends_the_times_a_stack_recorded(ctx, tmp_path, noise_stack):
    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, noise_stack[:, None], imagej=True, metadata={"axes": "TZYX", "finterval": 0.25})
    clock = FakeClock()
    pub = Publisher("tcp://127.0.0.1:*", context=ctx)
    pull = _pull(ctx, pub.endpoint)
    try:
        publish_stack(str(stack), pub, fps=20, stop=6, clock=clock, sleep=clock.sleep)
        msgs = _receive_all(pull)
    finally:
        pub.close()
        pull.close(linger=0)
    np.testing.assert_allclose([m.t for m in msgs[1:-1]], 0.25 * np.arange(6))  # not the 20 frames/s of the play


def test_a_slow_send_is_counted_late(ctx, tmp_path, noise_stack):
    np.save(tmp_path / "s.npy", noise_stack[:5])
    clock = FakeClock()
    pub = Publisher("tcp://127.0.0.1:*", context=ctx)
    pull = _pull(ctx, pub.endpoint)
    real_image = pub.image

    def slow_image(*a, **kw):  # each send takes three frame intervals of camera time
        clock.now += 0.3
        return real_image(*a, **kw)

    pub.image = slow_image
    try:
        report = publish_stack(str(tmp_path / "s.npy"), pub, fps=10, clock=clock, sleep=clock.sleep)
        _receive_all(pull)
    finally:
        pub.close()
        pull.close(linger=0)
    assert report.frames == 5 and report.late == 4


def test_stop_while_waiting_for_a_receiver_returns_promptly(ctx, tmp_path, noise_stack):
    np.save(tmp_path / "s.npy", noise_stack)
    pub = Publisher("tcp://127.0.0.1:*", context=ctx, poll_s=0.02)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=publish_stack(str(tmp_path / "s.npy"), pub, fps=0)))
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    pub.stop()
    t.join(2.0)
    pub.close()
    assert not t.is_alive() and time.monotonic() - t0 < 1.5
    assert result["r"].stopped and result["r"].frames == 0


def test_pub_waits_for_a_subscriber_and_gives_up_after_its_timeout(ctx):
    pub = Publisher("tcp://127.0.0.1:*", socket="pub", context=ctx, poll_s=0.02)
    t0 = time.monotonic()
    assert pub.wait_ready(0.2) is False
    assert 0.2 <= time.monotonic() - t0 < 3.0
    with pytest.raises(TimeoutError, match="no receiver on tcp://127.0.0.1:"):
        pub.start((4, 4), np.uint16, timeout_s=0.05)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    try:
        assert pub.wait_ready(5.0) is True
    finally:
        sub.close(linger=0)
        pub.close()
    with pytest.raises(PublishStopped):
        p2 = Publisher("tcp://127.0.0.1:*", context=ctx)
        p2.stop()
        try:
            p2.wait_ready(5.0)
        finally:
            p2.close()


def test_publish_cli_dry_run_and_errors(tmp_path, noise_stack):
    np.save(tmp_path / "s.npy", noise_stack)
    res = CliRunner().invoke(app, ["publish", str(tmp_path / "s.npy"), "tcp://*:5555", "--fps", "25", "--dry-run"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert (plan["frames"], plan["shape"], plan["socket"], plan["bind"], plan["fps"]) == (30, [24, 32], "push", True, 25.0)
    missing = CliRunner().invoke(app, ["publish", str(tmp_path / "nope.tif"), "tcp://*:5555"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad = CliRunner().invoke(app, ["publish", str(tmp_path / "s.npy"), "5555"])
    assert bad.exit_code == 2 and "tcp://HOST:PORT" in bad.output and "Traceback" not in bad.output


def test_publish_then_attach_gives_the_same_file_as_replay(tmp_path, noise_stack):
    """Two processes on one machine, as a user runs them; compared with `lagsplit replay`."""
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, noise_stack)
    replayed, attached = tmp_path / "replay.h5", tmp_path / "attach.h5"
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(replayed), *FAST_CLI])
    assert res.exit_code == 0, res.output

    proc = subprocess.Popen([sys.executable, "-m", "lagsplit", "publish", str(stack), "tcp://127.0.0.1:*",
                             "--fps", "0", "--wait", "60"], stderr=subprocess.PIPE, text=True)
    try:
        endpoint = None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"-> (tcp://127\.0\.0\.1:\d+)", line)
            if m:
                endpoint = m.group(1)
                break
        assert endpoint, "".join(seen)
        res = CliRunner().invoke(app, ["attach", endpoint, "--out", str(attached), *FAST_CLI])
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert res.exit_code == 0, res.output
    assert proc.returncode == 0 and "sent 30 frame(s)" in rest, rest
    with h5py.File(replayed, "r") as a, h5py.File(attached, "r") as b:
        for name in ("slow", "fast", "raw", "frames/index", "frames/model_version", "frames/warmup", "train/loss"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        assert a["slow"].shape == (30, 24, 32)
