"""``lagsplit batch`` with real parts: a real LocalCluster, a real ``dask scheduler`` with
``dask worker`` processes, a worker process killed mid-task, a corrupt recording, Ctrl-C
to the whole process group, each output read back from its HDF5 file."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from lagsplit.adapters.scenes import make_scene
from lagsplit.batch.summary import read_summary
from tests.support import FAST_CLI

pytest.importorskip("distributed")

SMALL = [*FAST_CLI, "--set", "model.work_size=32", "--set", "model.windows=[4,16]"]


def _movie(frames: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return make_scene("brownian", frames=frames, size=size, seed=seed).movie.astype(np.float32)


def _batch(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lagsplit", "batch", *args, *SMALL], capture_output=True, text=True,
                          timeout=timeout, **kw)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["frames/index"][:], f["raw"][:]


def _wait_for_rows(path: Path, rows: int, batch: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until the output ``batch`` writes at ``path`` holds ``rows`` flushed rows; its writer's pid."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if batch.poll() is not None:
            raise AssertionError(f"the batch ended first: {batch.communicate()}")
        try:
            with h5py.File(path, "r", swmr=True) as f:
                if int(f["flushed_rows"][()]) >= rows:
                    return int(f.attrs["writer_pid"])
        except (OSError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} never held {rows} rows")


def test_batch_on_a_local_cluster_writes_every_output_and_a_summary(tmp_path):
    """A folder with two recordings (one in a subfolder), a two-channel OME-TIFF and a
    corrupt TIFF: the corrupt one fails alone (exit 1, its error in batch.csv), every other
    plane stream is an output whose /raw is its input; a second run skips them untouched."""
    src = tmp_path / "archive"
    (src / "day2").mkdir(parents=True)
    a, b = _movie(30, seed=1), _movie(24, seed=2)
    np.save(src / "a.npy", a)
    np.save(src / "day2" / "b.npy", b)
    two = np.stack([_movie(20, seed=3), _movie(20, seed=4) * 2], axis=1)  # (T, C, Y, X)
    tifffile.imwrite(src / "two.ome.tif", two, ome=True, metadata={"axes": "TCYX"})
    (src / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF any more")
    out = tmp_path / "out"

    res = _batch(str(src), "--out", str(out), "--workers", "2")
    assert res.returncode == 1, res.stderr
    rows = {r["output"]: r for r in read_summary(out / "batch.csv")}
    assert set(rows) == {"a.h5", "b.h5", "two_c0.h5", "two_c1.h5", "broken.h5"}
    assert rows["broken.h5"]["status"] == "failed" and "broken.tif" in rows["broken.h5"]["error"]
    assert "broken.tif" in res.stderr
    for name, movie in (("a", a), ("day2/b", b), ("two_c0", two[:, 0]), ("two_c1", two[:, 1])):
        index, raw = _rows(out / f"{name}.h5")
        assert np.array_equal(index, np.arange(len(movie))) and np.array_equal(raw, movie), name
        assert rows[f"{Path(name).name}.h5"]["status"] == "ok"
        assert int(rows[f"{Path(name).name}.h5"]["frames"]) == len(movie)
    assert not (out / ".partial").exists()
    before = {p: _digest(p) for p in out.rglob("*.h5")}

    again = _batch(str(src), "--out", str(out), "--workers", "2")
    assert again.returncode == 1
    rows = {r["output"]: r["status"] for r in read_summary(out / "batch.csv")}
    assert rows == {"a.h5": "skipped", "b.h5": "skipped", "two_c0.h5": "skipped", "two_c1.h5": "skipped",
                    "broken.h5": "failed"}
    assert {p: _digest(p) for p in out.rglob("*.h5")} == before


def test_an_unreachable_scheduler_is_a_clear_error_before_anything_is_written(tmp_path):
    np.save(tmp_path / "a.npy", _movie(10))
    res = _batch(str(tmp_path / "a.npy"), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9",
                 timeout=120)
    assert res.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in " ".join(res.stderr.split())
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_refused_before_a_cluster_starts(tmp_path):
    res = _batch(str(tmp_path / "missing.tif"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "missing.tif does not exist" in res.stderr
    res = _batch(str(tmp_path / "*.tif"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "matches no recording" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_worker_killed_mid_task_is_resumed_on_another_and_every_frame_is_written_once(tmp_path):
    """A real scheduler and two worker processes; the worker writing the recording is killed
    (SIGKILL) part way: Dask runs the task again on the other worker, which continues the
    partial output after its last row."""
    from lagsplit.batch.cluster import SchedulerProcesses

    movie = _movie(400, seed=5)
    np.save(tmp_path / "long.npy", movie)
    out = tmp_path / "out"
    with SchedulerProcesses(workers=2) as procs:
        batch = subprocess.Popen([sys.executable, "-m", "lagsplit", "batch", str(tmp_path / "long.npy"), "--out",
                                  str(out), "--scheduler", procs.address, *SMALL, "--set", "source.fps=60"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            pid = _wait_for_rows(out / ".partial" / "long.h5", 60, batch)
            assert pid in procs.worker_pids
            os.kill(pid, signal.SIGKILL)
            _, err = batch.communicate(timeout=240)
        finally:
            batch.kill()
    assert batch.returncode == 0, err
    index, raw = _rows(out / "long.h5")
    assert np.array_equal(index, np.arange(len(movie))) and np.array_equal(raw, movie)
    with h5py.File(out / "long.h5", "r") as f:
        assert f["resumes/row"].shape[0] == 1  # continued once, after the kill
    row = read_summary(out / "batch.csv")[0]
    assert row["status"] == "ok" and int(row["frames"]) == len(movie)


def test_ctrl_c_cancels_leaving_finished_outputs_and_resumable_partials(tmp_path):
    """Ctrl-C to the batch's whole process group (as a terminal sends it): exit 130, the
    running task closes its file, batch.csv says cancelled; the next run continues it."""
    movie = _movie(400, seed=6)
    np.save(tmp_path / "long.npy", movie)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "lagsplit", "batch", str(tmp_path / "long.npy"), "--out", str(out), "--workers", "1",
            *SMALL]
    batch = subprocess.Popen([*args, "--set", "source.fps=60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        _wait_for_rows(out / ".partial" / "long.h5", 40, batch)
        os.killpg(batch.pid, signal.SIGINT)
        _, err = batch.communicate(timeout=120)
    finally:
        batch.kill()
    assert batch.returncode == 130, err
    assert read_summary(out / "batch.csv")[0]["status"] == "cancelled"
    assert not (out / "long.h5").exists()
    index, _ = _rows(out / ".partial" / "long.h5")
    assert 40 <= len(index) < len(movie)

    res = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    index, raw = _rows(out / "long.h5")
    assert np.array_equal(index, np.arange(len(movie))) and np.array_equal(raw, movie)


def test_gpu_tasks_without_a_gpu_worker_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", _movie(10))
    res = _batch(str(tmp_path / "a.npy"), "--out", str(tmp_path / "out"), "--workers", "1",
                 "--set", "model.device=cuda")
    assert res.returncode == 2, res.stderr
    assert "no worker of a local Dask cluster" in " ".join(res.stderr.split())
    assert "--resources GPU=1" in " ".join(res.stderr.split())


def test_ome_zarr_outputs_hold_every_frame_and_are_skipped_when_finished(tmp_path):
    pytest.importorskip("zarr")
    from lagsplit.run_file import open_run

    a, b = _movie(20, seed=7), _movie(16, seed=8)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "out"
    res = _batch(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(out), "--workers", "2",
                 "--format", "ome-zarr")
    assert res.returncode == 0, res.stderr
    for name, movie in (("a", a), ("b", b)):
        with open_run(out / f"{name}.ome.zarr") as f:
            assert f.whole_rows() == len(movie)
            assert np.array_equal(f["frames/index"][:], np.arange(len(movie)))
            assert np.array_equal(np.asarray(f["raw"][:]), movie)
    assert [r["status"] for r in read_summary(out / "batch.csv")] == ["ok", "ok"]
    again = _batch(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(out), "--format", "ome-zarr")
    assert [r["status"] for r in read_summary(out / "batch.csv")] == ["skipped", "skipped"], again.stderr


@pytest.mark.slow
def test_bench_batch_runs_every_way_and_reports_them(tmp_path):
    """`lagsplit bench batch` on tiny recordings: every way it compares ran and is reported."""
    res = subprocess.run([sys.executable, "-m", "lagsplit", "bench", "batch", "--recordings", "2", "--frames", "24",
                          "--size", "32", "--seam-frames", "60", "--split", "2", "--no-write"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split("\n"))
    for way in ("`lagsplit replay`, one after another", "`lagsplit batch --workers 1`", "`lagsplit batch --workers 2`",
                "`lagsplit batch --scheduler ADDRESS`", "| split |", "| whole (the same frames) |"):
        assert way in text
