"""The folder watcher against real folders written by tifffile: completion, ordering by the
frame number in the name, the end conditions, and every kind of bad file (skipped after
retries, counted, logged by name; nothing else lost)."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from lagsplit.adapters.watch import WatchAdapter, frame_number, read_image
from lagsplit.cli import app
from lagsplit.engine.hdf5_sink import GAP_REASONS, read_counters
from tests.support import FAST_CLI

QUICK = dict(settle_s=0.05, give_up_s=0.6, reorder_s=0.3, tick_s=0.01)
QUICK_SETS = ["--set", "source.settle_s=0.05", "--set", "source.give_up_s=0.6", "--set", "source.reorder_s=0.3"]


def _movie(n=30, shape=(32, 32), seed=1):
    return np.random.default_rng(seed).poisson(30, (n, *shape)).astype(np.uint16)


def _tiff_bytes(img: np.ndarray, tmp: Path) -> bytes:
    p = tmp / ".scratch.tif"
    tifffile.imwrite(p, img)
    data = p.read_bytes()
    p.unlink()
    return data


def _take(adapter: WatchAdapter, n: int | None = None, timeout_s: float = 10.0) -> list:
    """Run the adapter on a thread until it ends (or ``n`` frames), as the engine would."""
    frames: list = []

    def loop():
        for f in adapter:
            frames.append(f)
            if n is not None and len(frames) >= n:
                return

    adapter.open()
    t = threading.Thread(target=loop)
    t.start()
    t.join(timeout_s)
    adapter.stop()
    t.join(2.0)
    adapter.close()
    assert not t.is_alive()
    return frames


@pytest.mark.parametrize(("name", "number"), [
    ("00017_t0017.tif", 17),                                   # pymmcore-plus ImageSequenceWriter
    ("run-00003_t0012.tif", 12),                               # ... with a prefix: the t index
    ("img_channel000_position000_time000000017_z000.tif", 17),  # Micro-Manager 2 separate files
    ("img_000000017_DAPI_000.tif", 17),                         # Micro-Manager 1.4 separate files
    ("frame_0042.tiff", 42),
    ("cam1_2024-05-01_0099.ome.tif", 99),
    ("notes.tif", None),
])
def test_frame_number_comes_from_the_file_name(name, number):
    assert frame_number(name) == number


def test_a_frame_pattern_picks_the_number(tmp_path):
    import re

    assert frame_number("exp7_img12.tif", re.compile(r"img(?P<frame>\d+)")) == 12
    assert frame_number("exp7_img12.tif", re.compile(r"exp(\d+)")) == 7
    assert frame_number("exp7.tif", re.compile(r"img(\d+)")) is None


def test_existing_files_come_first_then_new_ones_in_frame_number_order(tmp_path):
    movie = _movie(12)
    for i in (2, 0, 1):
        tifffile.imwrite(tmp_path / f"frame_{i:04}.tif", movie[i])
    adapter = WatchAdapter(tmp_path, end_marker="END", **{**QUICK, "reorder_s": 2.0})

    def writer():
        time.sleep(0.2)
        for i in (3, 5, 4, 7, 6, 8, 9, 11, 10):  # events arrive out of order
            tifffile.imwrite(tmp_path / f"frame_{i:04}.tif", movie[i])
        (tmp_path / "END").touch()

    t = threading.Thread(target=writer)
    t.start()
    frames = _take(adapter)
    t.join()
    assert [f.index for f in frames] == list(range(12))
    np.testing.assert_array_equal(np.stack([f.array for f in frames]), movie)
    assert frames[4].meta["file"] == "frame_0004.tif"
    assert adapter.counters() == {"received": 12, "rejected": 0}
    assert adapter.finish_reason == "end marker END found"


def test_a_missing_frame_becomes_a_gap_after_the_reorder_wait(tmp_path):
    movie = _movie(6)
    for i in (0, 1, 3, 4):
        tifffile.imwrite(tmp_path / f"f{i}.tif", movie[i])
    adapter = WatchAdapter(tmp_path, idle_timeout_s=0.8, **QUICK)
    t0 = time.monotonic()
    frames = _take(adapter)
    assert [f.index for f in frames] == [0, 1, 3, 4]
    assert adapter.finish_reason == "no new file for 0.8 s"
    assert time.monotonic() - t0 < 10.0  # ends by itself, generous for a loaded machine


def test_a_file_written_in_two_steps_is_taken_once_complete(tmp_path):
    movie = _movie(3)
    data = _tiff_bytes(movie[1], tmp_path)
    tifffile.imwrite(tmp_path / "f0.tif", movie[0])
    tries = []
    half_tried = threading.Event()

    def reader(path):
        tries.append(os.path.basename(path))
        try:
            return read_image(path)
        except Exception:
            half_tried.set()
            raise

    adapter = WatchAdapter(tmp_path, end_marker="END", reader=reader, **QUICK)

    def writer():
        with open(tmp_path / "f1.tif", "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            half_tried.wait(5)  # the half file settles, is read, fails; then it is completed
            fh.write(data[len(data) // 2:])
        tifffile.imwrite(tmp_path / "f2.tif", movie[2])
        (tmp_path / "END").touch()

    t = threading.Thread(target=writer)
    adapter.open()
    t.start()
    frames = []
    th = threading.Thread(target=lambda: frames.extend(adapter))
    th.start()
    th.join(10)
    t.join()
    adapter.close()
    assert [f.index for f in frames] == [0, 1, 2]
    np.testing.assert_array_equal(frames[1].array, movie[1])
    assert tries.count("f1.tif") >= 2  # the half file was tried and failed before it was complete
    assert adapter.counters() == {"received": 3, "rejected": 0}


def test_renamed_into_place_and_polling_for_network_shares(tmp_path):
    movie = _movie(5)
    adapter = WatchAdapter(tmp_path, poll=True, poll_interval_s=0.05, end_marker="done.txt", **QUICK)

    def writer():
        time.sleep(0.1)
        for i in range(5):
            tmp = tmp_path / f".part{i}"
            tifffile.imwrite(tmp, movie[i])
            os.replace(tmp, tmp_path / f"img_{i:03}.tif")
        (tmp_path / "done.txt").write_text("")

    t = threading.Thread(target=writer)
    t.start()
    frames = _take(adapter)
    t.join()
    assert [f.index for f in frames] == list(range(5))
    assert "polling every 0.05 s" in adapter.describe()


def test_stop_ends_a_quiet_watch_promptly(tmp_path):
    adapter = WatchAdapter(tmp_path, **QUICK)
    adapter.open()
    th = threading.Thread(target=lambda: list(adapter))
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    adapter.stop()
    th.join(2)
    adapter.close()
    assert not th.is_alive() and time.monotonic() - t0 < 1.5


def test_a_missing_folder_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["watch", str(tmp_path / "nope"), "--out", str(tmp_path / "o.h5"), *FAST_CLI])
    assert res.exit_code == 2 and "watch folder" in res.output and "does not exist" in res.output
    assert not (tmp_path / "o.h5").exists()


def test_watch_dry_run_shows_the_source(tmp_path):
    res = CliRunner().invoke(app, ["watch", str(tmp_path), "--poll", "--idle-timeout", "2", "--end-marker", "END",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    src = json.loads(res.output)["source"]
    assert (src["kind"], src["path"], src["poll"], src["idle_timeout_s"], src["end_marker"]) == \
        ("watch", str(tmp_path), True, 2.0, "END")


def test_bad_files_are_skipped_counted_and_logged_and_nothing_else_is_lost(tmp_path):
    """A truncated TIFF, a half-written file (writer never finishes), a non-image file and a
    file of another shape, among good frames written live; `lagsplit watch` and `inspect`."""
    movie = _movie(26)
    folder = tmp_path / "acq"
    folder.mkdir()
    for i in range(4):  # already there at start
        tifffile.imwrite(folder / f"{i:05}_t{i:04}.tif", movie[i])
    bad = {8: "truncated", 12: "half-written", 15: "not an image", 19: "other shape"}
    name = lambda i: folder / f"{i:05}_t{i:04}.tif"  # noqa: E731
    stuck = []

    def writer():
        for i in range(4, 26):
            kind = bad.get(i)
            if kind == "truncated":
                name(i).write_bytes(_tiff_bytes(movie[i], tmp_path)[:700])
            elif kind == "half-written":
                fh = open(name(i), "wb")  # left open: no close event, size stays put
                fh.write(_tiff_bytes(movie[i], tmp_path)[:1200])
                fh.flush()
                stuck.append(fh)
            elif kind == "not an image":
                name(i).write_text('{"comment": "the acquisition software wrote this"}')
            elif kind == "other shape":
                tifffile.imwrite(name(i), np.zeros((16, 48), np.uint16))
            else:
                tifffile.imwrite(name(i), movie[i])
            time.sleep(0.01)
        (folder / "notes.txt").write_text("ignored: not *.tif*")
        (folder / "END").touch()

    t = threading.Thread(target=writer)
    t.start()
    out = tmp_path / "watch.h5"
    try:
        res = CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--end-marker", "END",
                                       *QUICK_SETS, *FAST_CLI])
    finally:
        t.join()
        for fh in stuck:
            fh.close()
    assert res.exit_code == 0, res.output
    good = [i for i in range(26) if i not in bad]
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], good)
        np.testing.assert_array_equal(f["raw"][:], movie[good])
        assert f["gaps/first_index"][:].tolist() == [8, 12, 15, 19]
        assert f["gaps/count"][:].tolist() == [1, 1, 1, 1]
        assert {GAP_REASONS[r] for r in f["gaps/reason"][:]} == {"rejected"}  # the watcher reports the frame numbers it skipped
        c = read_counters(f)
    assert (c["received"], c["processed"], c["rejected"], c["dropped"], c["gaps"]) == (26, 22, 4, 0, 4)
    assert "22 frames processed, 26 received, 4 rejected, 0 dropped, 4 gaps" in res.output
    for i in bad:
        assert f"skipped {name(i).name}" in res.output, i
    assert "still unreadable 0.6 s after it last changed" in res.output
    assert "16x48 uint16 differs from the series' 32x32 uint16" in res.output
    shown = CliRunner().invoke(app, ["inspect", str(out), "--no-config"])
    assert "received 26" in shown.output and "processed 22" in shown.output
    assert "rejected 4" in shown.output and "dropped 0" in shown.output
    assert "4 gap(s), 4 frame(s) missing" in shown.output


def test_a_duplicate_or_late_frame_number_is_rejected_by_name(tmp_path, caplog):
    movie = _movie(4)
    for i in range(3):
        tifffile.imwrite(tmp_path / f"a_{i}.tif", movie[i])
    tifffile.imwrite(tmp_path / "b_1.tif", movie[3])  # frame 1 again
    adapter = WatchAdapter(tmp_path, idle_timeout_s=0.5, **QUICK)
    with caplog.at_level(logging.WARNING, logger="lagsplit.watch"):
        frames = _take(adapter)
    assert [f.index for f in frames] == [0, 1, 2]
    assert adapter.counters() == {"received": 4, "rejected": 1}
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "frame number 1 was already taken from another file" in msg
    assert "a_1.tif" in msg or "b_1.tif" in msg


def test_a_full_folder_is_read_ahead_only_a_few_frames_at_a_time(tmp_path):
    movie = _movie(40, shape=(8, 8))
    for i in range(40):
        tifffile.imwrite(tmp_path / f"f_{i:03}.tif", movie[i])
    held = []

    def reader(path):
        held.append(len(adapter._ready))
        return read_image(path)

    adapter = WatchAdapter(tmp_path, idle_timeout_s=0.3, reader=reader, max_ready=4, **QUICK)
    frames = _take(adapter)
    assert [f.index for f in frames] == list(range(40))
    assert max(held) < 4  # never more than max_ready frames in memory waiting to go out


def test_when_inotify_cannot_start_the_folder_is_polled(tmp_path, monkeypatch, caplog):
    import watchdog.observers

    class Broken(watchdog.observers.Observer):
        def schedule(self, *a, **kw):
            raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(watchdog.observers, "Observer", Broken)
    movie = _movie(3)
    adapter = WatchAdapter(tmp_path, end_marker="END", poll_interval_s=0.05, **QUICK)

    def writer():
        time.sleep(0.1)
        for i in range(3):
            tifffile.imwrite(tmp_path / f"f{i}.tif", movie[i])
        (tmp_path / "END").touch()

    t = threading.Thread(target=writer)
    t.start()
    with caplog.at_level(logging.WARNING, logger="lagsplit.watch"):
        frames = _take(adapter)
    t.join()
    assert [f.index for f in frames] == [0, 1, 2]
    assert "inotify watch limit reached" in caplog.text and "polling every 0.05 s instead" in caplog.text
