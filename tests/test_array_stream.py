"""ArrayStream (the synthetic and replay adapters' player) paces frames by the clock and
sleep it is given: a fake pair plays a camera rate without a real wait."""
from __future__ import annotations

import time

import numpy as np
import pytest

from lagsplit.adapters.synthetic import ArrayStream
from tests.support import FakeClock


def test_frames_leave_at_the_frame_rate_of_the_injected_clock_without_real_sleeps():
    movie = np.arange(6 * 4 * 4, dtype=np.uint16).reshape(6, 4, 4)
    clock = FakeClock(start=50.0)
    stream = ArrayStream(movie, fps=10, first_index=3, sleep=clock.sleep, clock=clock)
    t0 = time.monotonic()
    sent_at = []
    for f in stream:
        sent_at.append(clock.now - 50.0)
        np.testing.assert_array_equal(f.array, movie[f.index - 3])
    assert time.monotonic() - t0 < 0.3  # 0.5 s of camera time, no real wait
    assert sent_at == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])  # frame k at k / fps
    assert clock.slept == pytest.approx(0.5) and stream.sent == 6


def test_stop_ends_a_paced_stream_between_frames():
    clock = FakeClock()
    stream = ArrayStream(np.zeros((100, 4, 4), np.uint8), fps=5, sleep=clock.sleep, clock=clock)
    got = []
    for f in stream:
        got.append(f.index)
        if f.index == 2:
            stream.stop()
    assert got == [0, 1, 2] and clock.slept == pytest.approx(0.4)
