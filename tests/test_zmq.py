"""The ZeroMQ source against real sockets on loopback: the wire protocol, every kind of bad
message (rejected, counted, logged, the socket stays up), gaps, and `lagsplit attach`."""
from __future__ import annotations

import json
import logging
import threading
import time

import h5py
import numpy as np
import pytest
import zmq
from typer.testing import CliRunner

from lagsplit.adapters.publish import Publisher, PublishStopped
from lagsplit.adapters.wire import Image, Start, StreamDecoder, WireError, encode_end, encode_image, encode_start
from lagsplit.adapters.zmq_source import EndpointError, ZmqAdapter
from lagsplit.cli import app
from lagsplit.engine.hdf5_sink import GAP_REASONS, read_counters
from tests.support import FAST_CLI, run_engine


def _push(ctx):
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"


def _frames(n=24, shape=(16, 20), seed=0):
    return np.random.default_rng(seed).poisson(40, (n, *shape)).astype(np.uint16)


# ---- the protocol without sockets ------------------------------------------------------------
def test_round_trip_keeps_pixels_frame_number_time_and_meta():
    movie = _frames(2)
    dec = StreamDecoder()
    start = dec.decode(encode_start("run-1", movie.shape[1:], movie.dtype, frame_interval_s=0.05))
    assert isinstance(start, Start) and start.shape == (16, 20) and start.dtype == np.dtype("<u2")
    assert start.frame_interval_s == 0.05
    img = dec.decode(encode_image("run-1", 17, movie[1], t=1732400000.125, meta={"stage_z": 3.5}, describe=True))
    assert isinstance(img, Image) and img.frame == 17 and img.t == 1732400000.125 and img.meta == {"stage_z": 3.5}
    np.testing.assert_array_equal(img.array, movie[1])
    end = dec.decode(encode_end("run-1", 1))
    assert end.frames == 1 and end.series == "run-1"


def test_header_is_the_documented_json():
    header = json.loads(encode_start("run-42", (512, 512), np.uint16, 0.05)[0])
    assert header == {"v": 1, "type": "start", "series": "run-42", "shape": [512, 512], "dtype": "<u2",
                      "frame_interval_s": 0.05}
    parts = encode_image("run-42", 17, np.zeros((4, 6), np.float32), t=1.5)
    assert json.loads(parts[0]) == {"v": 1, "type": "image", "series": "run-42", "frame": 17, "t": 1.5}
    assert len(parts[1]) == 4 * 6 * 4


GOOD = np.arange(16 * 20, dtype=np.uint16).reshape(16, 20)
BAD_MESSAGES = {
    "bad JSON": ([b"{not json", GOOD.tobytes()], "not UTF-8 JSON"),
    "not an object": ([b"[1, 2]"], "must be a JSON object"),
    "no version": ([b'{"type": "image", "frame": 5}', GOOD.tobytes()], 'no protocol version "v"'),
    "unknown version": ([b'{"v": 2, "type": "image", "series": "s", "frame": 5}', GOOD.tobytes()],
                        "unknown protocol version 2"),
    "unknown type": ([b'{"v": 1, "type": "frame", "series": "s"}'], "unknown message type 'frame'"),
    "wrong byte count": ([b'{"v": 1, "type": "image", "series": "s", "frame": 5}', GOOD.tobytes()[:-2]],
                         "638 bytes, expected 640"),
    "other shape": ([b'{"v": 1, "type": "image", "series": "s", "frame": 5, "shape": [20, 16]}', GOOD.tobytes()],
                    "shape [20, 16] differs from the series' [16, 20]"),
    "other dtype": ([b'{"v": 1, "type": "image", "series": "s", "frame": 5, "dtype": "<i2"}', GOOD.tobytes()],
                    "dtype '<i2' differs from the series' '<u2'"),
    "other series": ([b'{"v": 1, "type": "image", "series": "t", "frame": 5}', GOOD.tobytes()],
                     "of series 't', but series 's' is running"),
    "no pixels": ([b'{"v": 1, "type": "image", "series": "s", "frame": 5}'], "must have 2 part(s), got 1"),
    "negative frame": ([b'{"v": 1, "type": "image", "series": "s", "frame": -1}', GOOD.tobytes()],
                       '"frame" must be a non-negative integer'),
    "duplicate frame": ([b'{"v": 1, "type": "image", "series": "s", "frame": 3}', GOOD.tobytes()],
                        "is not after frame 3"),
    "second series": ([b'{"v": 1, "type": "start", "series": "u", "shape": [8, 8], "dtype": "<u2"}'],
                      "one run takes one series"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_each_bad_message_is_refused_with_a_reason_and_changes_nothing(case):
    parts, reason = BAD_MESSAGES[case]
    dec = StreamDecoder()
    dec.decode(encode_start("s", GOOD.shape, GOOD.dtype))
    dec.decode(encode_image("s", 3, GOOD))
    with pytest.raises(WireError) as err:
        dec.decode(parts)
    assert reason in str(err.value)
    nxt = dec.decode(encode_image("s", 4, GOOD + 1))  # the stream goes on
    assert nxt.frame == 4 and nxt.array[0, 0] == 1


def test_image_before_start_is_refused():
    with pytest.raises(WireError, match="image 0 before start"):
        StreamDecoder().decode(encode_image("s", 0, GOOD))


# ---- real sockets ----------------------------------------------------------------------------
def test_bad_messages_are_rejected_counted_logged_and_a_frame_jump_is_a_gap(ctx, tmp_path, small_model, fixed_train,
                                                                            caplog):
    movie = _frames(24)
    sock, endpoint = _push(ctx)
    adapter = ZmqAdapter(endpoint, context=ctx)
    sent = [i for i in range(24) if i not in (10, 11, 12)]  # frames 10-12 never sent: a gap

    def sender():
        sock.send_multipart(encode_image("s", 0, movie[0]))  # before start
        sock.send_multipart(encode_start("s", movie.shape[1:], movie.dtype, 0.01))
        for i in sent:
            sock.send_multipart(encode_image("s", i, movie[i]))
            if i == 5:
                sock.send_multipart([b"\xff\xfe not json", movie[6].tobytes()])
                sock.send_multipart([json.dumps({"v": 7, "type": "image", "series": "s", "frame": 6}).encode(),
                                     movie[6].tobytes()])
                sock.send_multipart([encode_image("s", 6, movie[6])[0], movie[6].tobytes()[:-1]])
                sock.send_multipart(encode_image("s", 6, np.zeros((8, 8), np.uint16), describe=True))
                sock.send_multipart(encode_image("s", 6, movie[6].astype(np.float32), describe=True))
        sock.send_multipart(encode_end("s", len(sent)))

    t = threading.Thread(target=sender)
    t.start()
    path = tmp_path / "out.h5"
    try:
        with caplog.at_level(logging.WARNING, logger="lagsplit.zmq"):
            status, _ = run_engine(adapter, small_model, fixed_train, path=path)
    finally:
        t.join()
        sock.close(linger=0)
    assert status.state.value == "finished" and status.rejected == 6
    assert status.received == len(sent) + 6  # what the monitor shows: the adapter saw them all
    assert adapter.counters() == {"received": len(sent) + 6, "rejected": 6}
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], sent)
        np.testing.assert_array_equal(f["raw"][:], movie[sent])
        assert f["gaps/first_index"][:].tolist() == [10] and f["gaps/count"][:].tolist() == [3]
        assert GAP_REASONS[f["gaps/reason"][0]] == "missing"
        c = read_counters(f)
    assert (c["received"], c["processed"], c["rejected"], c["dropped"], c["gaps"]) == (len(sent) + 6, len(sent), 6, 0, 1)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for reason in ("before start", "not UTF-8 JSON", "unknown protocol version 7", "639 bytes, expected 640",
                   "shape [8, 8] differs", "dtype '<f4' differs"):
        assert reason in logged, reason


def test_stop_ends_a_silent_stream_promptly(ctx):
    sock, endpoint = _push(ctx)
    adapter = ZmqAdapter(endpoint, context=ctx, poll_s=0.02)
    adapter.open()
    got = []
    t = threading.Thread(target=lambda: got.extend(adapter))
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    adapter.stop()
    t.join(2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 1.5 and got == []
    adapter.close()
    sock.close(linger=0)


def test_idle_timeout_ends_the_stream_after_its_frames(ctx):
    adapter = ZmqAdapter("tcp://127.0.0.1:*", context=ctx, idle_timeout_s=0.2, poll_s=0.02)
    assert adapter.bind and adapter.endpoint.startswith("tcp://127.0.0.1:") and not adapter.endpoint.endswith("*")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(adapter.endpoint)
    push.send_multipart(encode_start("s", GOOD.shape, GOOD.dtype))
    for i in range(2):
        push.send_multipart(encode_image("s", i, GOOD))  # and no end message: the sender goes quiet
    t0 = time.monotonic()
    assert [f.index for f in adapter] == [0, 1]
    assert 0.2 <= time.monotonic() - t0 < 3.0
    push.close(linger=0)
    adapter.close()


def test_a_busy_port_is_a_clear_error_before_the_run(ctx):
    sock, endpoint = _push(ctx)
    port = endpoint.rsplit(":", 1)[1]
    with pytest.raises(EndpointError, match=f"cannot bind tcp://\\*:{port}"):
        ZmqAdapter(f"tcp://*:{port}", context=ctx)
    sock.close(linger=0)


def test_sub_receives_from_a_pub_publisher_that_waits_for_its_subscriber(ctx):
    movie = _frames(10)
    pub = Publisher("tcp://127.0.0.1:*", socket="pub", series="b", context=ctx)
    adapter = ZmqAdapter(pub.endpoint, socket="sub", context=ctx, idle_timeout_s=5)

    def sender():
        pub.start(movie.shape[1:], movie.dtype, timeout_s=5)
        for i in range(10):
            pub.image(i, movie[i])
        pub.end()

    t = threading.Thread(target=sender)
    t.start()
    frames = list(adapter)
    t.join()
    pub.close()
    adapter.close()
    assert [f.index for f in frames] == list(range(10))
    np.testing.assert_array_equal(np.stack([f.array for f in frames]), movie)
    assert frames[3].meta["series"] == "b" and adapter.ended.frames == 10


def test_attach_cli_writes_frames_gaps_and_counts_and_inspect_shows_them(tmp_path):
    movie = _frames(30, shape=(32, 32), seed=2)
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", series="cli", context=ctx)

    def sender():
        try:
            pub.start(movie.shape[1:], movie.dtype, timeout_s=20)
            for i in range(30):
                if i in (7, 8):
                    continue  # a gap of two frames
                pub.image(i, movie[i], t=1000.0 + i)
                if i == 20:
                    pub._send([b'{"v": 1, "type": "image", "series": "cli", "frame": 21}', b"short"], None)
            pub.end()
        except PublishStopped:
            pass  # attach failed; the assertions below say why
        finally:
            pub.close()

    t = threading.Thread(target=sender)
    t.start()
    out = tmp_path / "attach.h5"
    try:
        res = CliRunner().invoke(app, ["attach", pub.endpoint, "--out", str(out), *FAST_CLI])
    finally:
        pub.stop()
        t.join()
        ctx.term()
    assert res.exit_code == 0, res.output
    assert "5 bytes, expected 2048" in res.output
    kept = [i for i in range(30) if i not in (7, 8)]
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], kept)
        np.testing.assert_array_equal(f["frames/timestamp"][:], 1000.0 + np.array(kept))
        assert (f["gaps/first_index"][:].tolist(), f["gaps/count"][:].tolist()) == ([7], [2])
        assert "zmq pull connected to tcp://127.0.0.1:" in f.attrs["source"]
        c = read_counters(f)
    assert (c["received"], c["processed"], c["rejected"], c["gaps"]) == (29, 28, 1, 1)
    shown = CliRunner().invoke(app, ["inspect", str(out), "--no-config"])
    assert shown.exit_code == 0, shown.output
    assert "received 29" in shown.output and "processed 28" in shown.output
    assert "rejected 1" in shown.output and "dropped 0" in shown.output
    assert "2 from 7 (missing)" in shown.output


def test_attach_dry_run_and_config_errors(tmp_path):
    res = CliRunner().invoke(app, ["attach", "tcp://*:5555", "--sub", "--idle-timeout", "3", "--dry-run"])
    assert res.exit_code == 0, res.output
    src = json.loads(res.output)["source"]
    assert src == {"kind": "zmq", "endpoint": "tcp://*:5555", "socket": "sub", "bind": None,
                   "idle_timeout_s": 3.0, "rcvhwm": 1000}
    bad = CliRunner().invoke(app, ["attach", "localhost:5555", "--dry-run"])
    assert bad.exit_code == 2 and "source.endpoint" in bad.output and "tcp://HOST:PORT" in bad.output


def _attach(out, movie, frames, *extra):
    """`lagsplit attach` to a real publisher on loopback that sends ``frames`` of ``movie``
    (with their numbers) and ends the series."""
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", series="acq", context=ctx)

    def sender():
        try:
            pub.start(movie.shape[1:], movie.dtype, timeout_s=20)
            for i in frames:
                pub.image(i, movie[i], t=100.0 + i)
            pub.end()
        except PublishStopped:
            pass  # attach failed; the assertions say why
        finally:
            pub.close()

    t = threading.Thread(target=sender)
    t.start()
    try:
        return CliRunner().invoke(app, ["attach", pub.endpoint, "--out", str(out), *FAST_CLI, *extra])
    finally:
        pub.stop()
        t.join()
        ctx.term()


def test_attach_resumes_over_zeromq_dropping_the_frames_the_file_holds(tmp_path):
    movie, out = _frames(20, shape=(24, 32), seed=4), tmp_path / "live.h5"
    first = _attach(out, movie, range(12))
    assert first.exit_code == 0, first.output
    # the acquisition PC restarts its sender, which sends again from frame 6
    again = _attach(out, movie, range(6, 20), "--resume")
    assert again.exit_code == 0, again.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(20))  # no duplicates, no holes
        np.testing.assert_array_equal(f["raw"][:], movie)
        np.testing.assert_array_equal(f["frames/timestamp"][:], 100.0 + np.arange(20))
        assert f["resumes/after_index"][:].tolist() == [11]
        assert f["gaps/first_index"].shape[0] == 0
        c = read_counters(f)
    # the frames sent again are skipped as done, not rejected, and not counted twice
    assert (c["received"], c["processed"], c["rejected"]) == (20, 20, 0)
