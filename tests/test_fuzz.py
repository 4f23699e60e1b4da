"""Fuzzing the two live sources with hypothesis: whatever arrives (ZeroMQ messages with
random headers and payloads, files of random bytes, truncated or malformed TIFFs), the
source never raises, never stops the stream, counts every message or file it rejects,
and still delivers every good frame. Bounded (max_examples) to stay in the fast suite."""
from __future__ import annotations

import io
import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import tifffile
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagsplit.adapters.watch import WatchAdapter
from lagsplit.adapters.wire import End, Image, StreamDecoder, WireError, encode_end, encode_image, encode_start
from lagsplit.adapters.zmq_source import ZmqAdapter

SHAPE, DTYPE = (16, 20), np.dtype("<u2")
GOOD = [np.full(SHAPE, 100 + i, DTYPE) for i in range(5)]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- ZeroMQ ----------------------------------------------------------------------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
KEYS = ("v", "type", "series", "frame", "shape", "dtype", "t", "meta", "frames", "frame_interval_s",
        "pixel_size_um", "channel")
LIKELY = st.sampled_from([1, 2, "image", "start", "end", "run", "other", [16, 20], [0, 20], "<u2", "float32", 3, -1])
# headers as senders write them (wire protocol v1), each with the fields it may carry
TEMPLATES = (
    ({"v": 1, "type": "image", "series": "run", "frame": 7, "t": 1.5, "shape": [16, 20], "dtype": "<u2", "meta": {}},
     ("frame", "t", "meta", "shape", "dtype", "series", "v", "type")),
    ({"v": 1, "type": "start", "series": "run", "shape": [16, 20], "dtype": "<u2", "frame_interval_s": 0.05,
      "pixel_size_um": 0.1, "channel": "GFP"},
     ("series", "shape", "dtype", "frame_interval_s", "pixel_size_um", "channel", "v", "type")),
    ({"v": 1, "type": "end", "series": "run", "frames": 5}, ("series", "frames", "v", "type")),
)


@st.composite
def mutated(draw) -> bytes:
    """A sender's header with one or two of its fields changed to anything, or taken out."""
    template, keys = draw(st.sampled_from(TEMPLATES))
    h = dict(template)
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True)):
        if draw(st.booleans()) and draw(st.booleans()):
            h.pop(key)
        else:
            h[key] = draw(LIKELY | json_value)
    return json.dumps(h, allow_nan=True).encode()


made_up = st.dictionaries(st.sampled_from(KEYS), LIKELY | json_value, max_size=8).map(
    lambda h: json.dumps(h, allow_nan=True).encode())
exact = st.binary(min_size=640, max_size=640)  # the byte count of a 16 x 20 <u2 frame
payload = st.binary(max_size=64) | st.binary(min_size=600, max_size=700)
message = st.one_of(
    st.tuples(mutated(), exact).map(list),  # a field or two wrong in an otherwise good message
    st.tuples(mutated() | made_up, st.lists(exact | payload, max_size=2)).map(lambda t: [t[0], *t[1]]),
    st.lists(payload, min_size=1, max_size=3),  # no header at all
)


@FUZZ
@given(junk=st.lists(st.lists(message, min_size=1, max_size=4), min_size=len(GOOD), max_size=len(GOOD)))
def test_random_zeromq_messages_are_rejected_and_counted_and_the_stream_goes_on(junk):
    sequence, good = [encode_start("run", SHAPE, DTYPE)], set()
    for i, batch in enumerate(junk):
        sequence += batch
        good.add(len(sequence))
        sequence.append(encode_image("run", i, GOOD[i], t=float(i)))
    sequence.append(encode_end("run", len(GOOD)))
    # what the protocol makes of each message: rejected (WireError, and nothing else), or taken
    shadow, rejected, accepted, junk_taken = StreamDecoder(), 0, [], False
    for k, parts in enumerate(sequence):
        try:
            msg = shadow.decode(parts)
        except WireError:
            rejected += 1
            continue
        if isinstance(msg, Image):
            accepted.append((msg.frame, msg.array.copy()))
            junk_taken |= k not in good
        elif isinstance(msg, End):
            junk_taken |= k != len(sequence) - 1  # a made-up end ends the stream early
            break

    ctx = zmq.Context()
    adapter = ZmqAdapter("tcp://127.0.0.1:*", idle_timeout_s=5, context=ctx, log_first=0)
    sender = ctx.socket(zmq.PUSH)
    sender.setsockopt(zmq.LINGER, 1000)
    try:
        sender.connect(adapter.endpoint)
        adapter.open()
        for parts in sequence:
            sender.send_multipart(parts)
        frames = [(f.index, np.array(f.array)) for f in adapter]
        counters = adapter.counters()
    finally:
        sender.close(linger=0)
        adapter.close()
        ctx.term()
    assert adapter.ended is not None  # the stream went on to an end message
    assert [i for i, _ in frames] == [i for i, _ in accepted]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(frames, accepted))
    assert counters["rejected"] == rejected and counters["received"] - rejected == len(frames)
    if not junk_taken:  # no made-up message passed for a frame: every good frame came, whole
        assert [i for i, _ in frames] == list(range(len(GOOD)))
        assert all(np.array_equal(a, g) for (_, a), g in zip(frames, GOOD))


# ---- watched files ------------------------------------------------------------------------------

def _tiff(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack")
    return buf.getvalue()


GOOD_TIFF = _tiff(GOOD[0])
bad_file = st.one_of(
    st.binary(max_size=300),                                                     # random bytes
    st.integers(0, len(GOOD_TIFF) - 1).map(lambda n: GOOD_TIFF[:n]),              # a truncated TIFF
    st.binary(min_size=1, max_size=32).map(lambda b: GOOD_TIFF[:8] + b + GOOD_TIFF[8 + len(b):]),  # a bad header
    st.sampled_from([_tiff(np.zeros((8, 8), DTYPE)), _tiff(np.zeros(SHAPE, np.float32)),  # another shape, dtype
                     _tiff(np.zeros((3, *SHAPE), DTYPE)), _tiff(np.zeros(SHAPE, bool))]),   # a stack, not numeric
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=st.lists(bad_file, min_size=1, max_size=4), where=st.randoms())
def test_random_watched_files_are_rejected_and_counted_and_every_good_frame_comes(bad, where):
    # the first file is good: a valid image of another shape or dtype that came first would
    # start the series (by design), and the good frames would be the odd ones out
    numbers = list(range(1, len(GOOD) + len(bad)))
    where.shuffle(numbers)
    good_at, bad_at = sorted([0, *numbers[:len(GOOD) - 1]]), numbers[len(GOOD) - 1:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, n in enumerate(good_at):
            tifffile.imwrite(folder / f"frame_{n:04}.tif", GOOD[i])
        for n, content in zip(bad_at, bad):
            (folder / f"frame_{n:04}.tif").write_bytes(content)
        (folder / "END").touch()
        adapter = WatchAdapter(folder, end_marker="END", settle_s=0.02, give_up_s=0.3, reorder_s=0.1, tick_s=0.01)
        guard = threading.Timer(30, adapter.stop)  # a hang fails below, not the whole suite
        guard.start()
        try:
            adapter.open()
            frames = list(adapter)
            counters = adapter.counters()
        finally:
            guard.cancel()
            adapter.close()
    got = {f.index: f.array for f in frames}
    for i, n in enumerate(good_at):  # every good frame, whatever came around it
        assert n in got and np.array_equal(got[n], GOOD[i]), n
    assert counters["received"] == len(GOOD) + len(bad)  # every file taken in: read, or skipped and counted
    assert counters["rejected"] == len(GOOD) + len(bad) - len(frames)
    assert adapter.finish_reason == "end marker END found"
