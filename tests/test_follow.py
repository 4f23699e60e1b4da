"""The Qt-free half of following a run: RunFollower reads only what is new (and at most the
last ``keep`` rows), FrameWindow holds the last ``keep`` rows in order, in bounded memory."""
from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

from lagsplit.napari.follow import FrameWindow, RunFollower, Update, default_keep
from lagsplit.run_file import NotARunFile, Rows, Scale

from .run_files import write_run


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("follow"), gaps=False)


def _update(first: int, k: int, h: int = 2, w: int = 3) -> Update:
    rows = np.arange(first, first + k)
    img = np.broadcast_to(rows[:, None, None], (k, h, w)).astype(np.float32)
    facts = Rows(first, rows + 100, rows * 0.5, rows % 2 == 0, rows.astype(np.float32))
    return Update(first, {"slow": img, "fast": -img}, facts, first + k, {}, Scale(), "x.h5")


def test_the_window_keeps_the_last_rows_in_order_across_shifts():
    win = FrameWindow(keep=5)
    first = 0
    for k in (2, 3, 1, 4, 0, 2, 6, 1):
        win.extend(_update(first, k))
        first += k
        held = np.arange(max(0, first - 5), first) if first > 5 else np.arange(first)
        assert win.first_row == held[0] and win.n == len(held) <= 5
        np.testing.assert_array_equal(win.data("slow")[:, 0, 0], held)
        np.testing.assert_array_equal(win.data("fast")[:, 1, 2], -held)
        np.testing.assert_array_equal(win.rows().index, held + 100)
    assert win.capacity == 7 and win._images["slow"].shape[0] == 7  # bounded: 1.5 x keep rows


def test_the_window_reports_the_rows_that_left_it_and_starts_over_after_a_skip():
    win = FrameWindow(keep=4)
    assert win.extend(_update(0, 4)) == 0
    assert win.extend(_update(4, 1)) == 1  # row 0 leaves the view (still stored: no copy yet)
    assert win.extend(_update(5, 2)) == 2  # the arrays are full: rows 3..6 move to the front
    np.testing.assert_array_equal(win.data("slow")[:, 0, 0], [3, 4, 5, 6])
    assert win.extend(_update(20, 2)) == 17  # the follower skipped rows 7..19
    assert (win.first_row, win.n) == (20, 2)


def test_the_follower_reads_new_rows_once_and_never_more_than_keep(run_file):
    with h5py.File(run_file, "r") as f:
        n = len(f["frames/index"])
        slow = f["slow"][:]
    fol = RunFollower(run_file)
    try:
        upd = fol.poll()
        assert upd is not None and (upd.first_row, len(upd), upd.total) == (0, n, n)
        np.testing.assert_array_equal(upd.images["slow"], slow)
        assert upd.counters["processed"] == n and upd.scale.frame_interval_s == pytest.approx(0.05)
        assert len(fol.poll()) == 0
    finally:
        fol.close()
    fol = RunFollower(run_file, keep=4)
    try:
        upd = fol.poll()
        assert upd.first_row == n - 4 and list(upd.rows.index) == list(range(n - 4, n))
        np.testing.assert_array_equal(upd.images["raw"].shape, (4, 24, 32))
    finally:
        fol.close()


def test_the_follower_waits_for_a_file_not_written_yet_and_refuses_a_foreign_one(tmp_path):
    fol = RunFollower(tmp_path / "later.h5")
    assert fol.poll() is None
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    assert RunFollower(foreign).poll() is None  # just written: a run may be writing its first attributes
    os.utime(foreign, (time.time() - 60, time.time() - 60))
    with pytest.raises(NotARunFile, match="lacks lagsplit_version"):
        RunFollower(foreign).poll()


def test_default_keep_fits_the_memory_budget():
    keep = default_keep((512, 512), [np.uint16, np.float32, np.float32], mib=512)
    assert keep * 1.5 * 512 * 512 * 10 <= 512 << 20 and keep > 100
    assert default_keep((4096, 4096), [np.float32] * 3, mib=16) == 8


def test_a_look_that_races_the_writer_is_retried_with_the_file_reopened(run_file, monkeypatch):
    fol = RunFollower(run_file, keep=4)
    real = RunFollower._read
    calls = {"n": 0}

    def flaky(self, f):
        calls["n"] += 1
        if calls["n"] in (2, 3):  # what HDF5 raises when a refresh meets a half-written extent
            raise OSError("Unable to refresh dataset (invalid dataset size, likely file corruption)")
        return real(self, f)

    monkeypatch.setattr(RunFollower, "_read", flaky)
    try:
        first = fol.poll()
        assert len(first) == 4
        for _ in range(2):
            upd = fol.poll()
            assert len(upd) == 0 and upd.first_row == first.total and fol.file is None  # reopened next time
        assert len(fol.poll()) == 0 and fol.failures == 0 and fol.file is not None
        monkeypatch.setattr(RunFollower, "_read", lambda self, f: (_ for _ in ()).throw(OSError("gone")))
        for _ in range(24):
            fol.poll()
        with pytest.raises(OSError, match="25 looks in a row failed: gone"):
            fol.poll()
    finally:
        fol.close()
