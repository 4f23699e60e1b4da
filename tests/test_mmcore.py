"""Real acquisition software as the client: pymmcore-plus runs a time-lapse with a camera
written in pure Python (UniMMCore + MovieCamera, no Micro-Manager download), and lagsplit
follows it live, once through the folder its image-sequence writer fills and once through
its frameReady events sent over ZeroMQ. Every acquired frame must arrive exactly once, in
order, with its frame number and its pixels."""
from __future__ import annotations

import threading
import warnings

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from lagsplit.cli import app
from lagsplit.engine.hdf5_sink import read_counters
from tests.support import FAST_CLI

pytest.importorskip("pymmcore_plus")
useq = pytest.importorskip("useq")

from lagsplit.adapters.mmcore_publisher import MDAPublisher, simulated_core  # noqa: E402

FRAMES = 30


@pytest.fixture
def movie():
    return np.random.default_rng(11).poisson(60, (FRAMES, 32, 32)).astype(np.uint16)


def _sequence(interval_s: float = 0.02):
    return useq.MDASequence(time_plan={"interval": interval_s, "loops": FRAMES})


def _check(out, movie):
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(FRAMES))
        np.testing.assert_array_equal(f["raw"][:], movie)
        assert len(f["gaps/first_index"]) == 0
        c = read_counters(f)
    assert (c["received"], c["processed"], c["rejected"], c["dropped"]) == (FRAMES, FRAMES, 0, 0)


def test_watch_follows_the_folder_pymmcore_plus_writes_during_its_acquisition(tmp_path, movie):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the handler module is marked for a future move
        from pymmcore_plus.mda.handlers import ImageSequenceWriter

    core = simulated_core(movie)
    folder = tmp_path / "acq"
    writer = ImageSequenceWriter(folder, overwrite=True)
    folder.mkdir()  # lagsplit may start before the acquisition creates it

    def acquire():  # on its own thread, as in a GUI
        core.mda.run(_sequence(), output=writer)
        # run() returns once the writer (on a relay thread of its own) has saved every frame;
        # the sequenceFinished signal can come before the last file is written
        (folder / "END").touch()

    acq = threading.Thread(target=acquire)
    acq.start()
    out = tmp_path / "watch.h5"
    try:
        res = CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--end-marker", "END",
                                       "--set", "source.settle_s=0.05", *FAST_CLI])
    finally:
        acq.join(30)
    assert not acq.is_alive()
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in folder.glob("*.tif"))
    assert len(files) == FRAMES and files[0] == "00000_t0000.tif"  # written by pymmcore-plus itself
    _check(out, movie)


def test_attach_receives_the_frameready_events_of_a_pymmcore_plus_acquisition(tmp_path, movie):
    core = simulated_core(movie)
    sender = MDAPublisher(core, "tcp://127.0.0.1:*", series="mda", send_timeout_s=10)
    failed = []

    def acquire():
        try:
            if not sender.wait_ready(30):
                failed.append("no receiver")
                return
            core.mda.run(_sequence())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(repr(exc))
        finally:
            sender.close()

    acq = threading.Thread(target=acquire)
    acq.start()
    out = tmp_path / "attach.h5"
    try:
        res = CliRunner().invoke(app, ["attach", sender.endpoint, "--out", str(out), "--idle-timeout", "30", *FAST_CLI])
    finally:
        sender.publisher.stop()
        acq.join(30)
    assert not failed and not acq.is_alive()
    assert res.exit_code == 0, res.output
    assert "series 'mda' ended after 30 frame(s)" in res.output
    assert (sender.frames, sender.dropped) == (FRAMES, 0)
    _check(out, movie)
    with h5py.File(out, "r") as f:
        ts = f["frames/timestamp"][:]
    assert np.all(np.diff(ts) > 0)  # acquisition times, in order
