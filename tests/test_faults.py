"""Faults inflicted on real `lagsplit` processes and on the real engine; what the HDF5 file
keeps is read back. README, "When things go wrong"."""
from __future__ import annotations

import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from lagsplit.adapters.synthetic import ArrayStream, make_scene
from lagsplit.cli import app
from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig, OutputConfig, RuntimeConfig, TrainConfig
from lagsplit.engine.engine import Engine
from lagsplit.engine.frame import Frame
from lagsplit.engine.hdf5_sink import HDF5Sink, read_counters
from lagsplit.engine.monitor import render
from lagsplit.engine.status import RunState, Status
from lagsplit.engine.threaded_sink import ThreadedSink
from lagsplit.engine.trainer import OnlineTrainer
from lagsplit.metrics import nrmse
from tests.support import FAST_CLI, run_engine

PER_FRAME = ("slow", "fast", "raw", "frames/index", "frames/timestamp", "frames/model_version", "frames/warmup",
             "frames/latency_ms")


def start(*args: str, after: tuple[str, ...] = ()) -> subprocess.Popen:
    """A real `lagsplit` process in the background (the fast tiny engine, then ``after``, whose
    settings win over the tiny engine's), stderr captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    return subprocess.Popen([sys.executable, "-m", "lagsplit", *args, *FAST_CLI, *after], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def rows_visible(path: Path) -> int:
    """Rows a live reader (SWMR) sees now; 0 while the file is not there yet."""
    try:
        with h5py.File(path, "r", swmr=True) as f:
            return f["frames/index"].shape[0]
    except (OSError, KeyError):
        return 0


def wait_for_rows(proc: subprocess.Popen, path: Path, rows: int, timeout: float = 60) -> int:
    """Wait until a reader sees at least ``rows`` rows; return how many it saw."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline and seen < rows:
        assert proc.poll() is None, f"lagsplit ended early: {proc.communicate()[1]}"
        time.sleep(0.1)
        seen = rows_visible(path)
    assert seen >= rows, f"only {seen} rows after {timeout} s"
    return seen


def per_frame_lengths(f: h5py.File) -> dict[str, int]:
    return {name: f[name].shape[0] for name in PER_FRAME}


def long_stack(tmp_path: Path, noise_stack: np.ndarray, repeats: int = 20) -> Path:
    src = tmp_path / "long.npy"
    np.save(src, np.concatenate([noise_stack] * repeats))  # 600 frames
    return src


def test_a_killed_run_keeps_every_flushed_frame_with_one_row_count(tmp_path, noise_stack):
    src, out = long_stack(tmp_path, noise_stack), tmp_path / "killed.h5"
    proc = start("replay", str(src), "--out", str(out), "--fps", "40", "--set", "output.flush_every=5")
    try:
        seen = wait_for_rows(proc, out, 20)
        seen = max(seen, rows_visible(out))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with h5py.File(out, "r", swmr=True) as f:
        lengths = per_frame_lengths(f)
        n = lengths["frames/index"]
        assert set(lengths.values()) == {n}, lengths
        assert n >= seen  # every row a reader saw before the kill is still there
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(n))
        np.testing.assert_array_equal(f["raw"][:], np.concatenate([noise_stack] * 20)[:n])
        assert np.isfinite(f["slow"][:]).all()


def test_repair_lets_every_reader_open_the_file_of_a_killed_run(tmp_path, noise_stack):
    src, out = long_stack(tmp_path, noise_stack), tmp_path / "killed.h5"
    proc = start("replay", str(src), "--out", str(out), "--fps", "40", "--set", "output.flush_every=5")
    try:
        wait_for_rows(proc, out, 10)
        live = CliRunner().invoke(app, ["repair", str(out)])
        assert live.exit_code == 2, live.output
        assert f"being written by process {proc.pid}" in live.output and "swmr=True" in live.output
        assert "open for write" in " ".join(CliRunner().invoke(app, ["inspect", str(out), "--no-config"]).output.split())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r").close()  # what Fiji, HDFView and plain h5py meet
    res = CliRunner().invoke(app, ["repair", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"repaired {out}: cleared the open-for-write mark" in text and "any HDF5 reader opens it" in text
    with h5py.File(out, "r") as f:  # an ordinary reader
        lengths = per_frame_lengths(f)
        n = lengths["frames/index"]
        assert set(lengths.values()) == {n} and n >= 10
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(n))
    again = CliRunner().invoke(app, ["repair", str(out)])
    assert again.exit_code == 0 and "closed cleanly: nothing to repair" in " ".join(again.output.split())


def test_repair_refuses_a_file_lagsplit_did_not_write(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["a"] = 1
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    for path, says in ((other, "not a lagsplit output file"), (text, "not an HDF5 file"),
                       (tmp_path / "none.h5", "does not exist")):
        res = CliRunner().invoke(app, ["repair", str(path)])
        assert res.exit_code == 2 and says in res.output, res.output


# ---- stopping ----------------------------------------------------------------------------------------

def _gaps(f: h5py.File) -> list[tuple[int, int, str]]:
    reasons = [str(r) for r in f["gaps"].attrs["reasons"]]
    return [(int(a), int(c), reasons[r]) for a, c, r in zip(f["gaps/first_index"][:], f["gaps/count"][:], f["gaps/reason"][:])]


def _stop_with(tmp_path: Path, noise_stack: np.ndarray, signals: list[int]) -> tuple[subprocess.Popen, str, Path]:
    """A replay whose worker is slower than its source (20 training steps a frame), so its
    queue holds frames when the signals come."""
    src, out = long_stack(tmp_path, noise_stack), tmp_path / "stopped.h5"
    proc = start("replay", str(src), "--out", str(out), "--fps", "60",
                 after=("--set", "train.steps_per_frame=20", "--set", "output.flush_every=5"))
    try:
        wait_for_rows(proc, out, 10)
        time.sleep(0.5)  # let the queue fill
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc, " ".join(err.split()), out


def _check_stopped_file(out: Path, err: str) -> None:
    with h5py.File(out, "r") as f:  # an ordinary reader: the file was closed
        lengths = per_frame_lengths(f)
        n = lengths["frames/index"]
        assert set(lengths.values()) == {n}
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(n))
        counters = read_counters(f)
        gaps = _gaps(f)
    left = counters["not_processed"]
    assert left > 0, err  # the queue held frames when the signal came
    assert counters["received"] == counters["processed"] + left == n + left
    # every frame received and not processed is a gap of its own reason, right after the last row
    assert gaps == [(n, left, "not processed")]
    assert "stopped by" in err and f": {n} frames written to {out}, {left} received but not processed" in err


def test_ctrl_c_flushes_and_closes_the_file_and_exits_130_and_a_second_one_changes_nothing(tmp_path, noise_stack):
    proc, err, out = _stop_with(tmp_path, noise_stack, [signal.SIGINT, signal.SIGINT])
    assert proc.returncode == 130, err
    assert "SIGINT: still closing" in err
    _check_stopped_file(out, err)


def test_sigterm_flushes_and_closes_the_file_and_exits_143(tmp_path, noise_stack):
    proc, err, out = _stop_with(tmp_path, noise_stack, [signal.SIGTERM])
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err
    _check_stopped_file(out, err)


# ---- backpressure --------------------------------------------------------------------------------------

class SlowDisk(HDF5Sink):
    """The real HDF5 sink on a disk that takes ``delay`` seconds per row (far slower than the
    tiny engine's worker); notes when each row's write began."""

    delay = 0.15

    def append(self, r):
        self.started = [*getattr(self, "started", []), time.monotonic()]
        time.sleep(self.delay)
        super().append(r)


class TimedStream(ArrayStream):
    """A source as fast as possible that notes when each frame left it."""

    def __iter__(self):
        self.sent_at = []
        for frame in super().__iter__():
            self.sent_at.append(time.monotonic())
            yield frame


def _run_slow_sink(path: Path, movie: np.ndarray, overflow: str, small_model, fixed_train):
    source = TimedStream(movie)
    cascade = Cascade(small_model, fixed_train.history, fixed_train.warmup_steps)
    disk = SlowDisk(path, OutputConfig(path=str(path)))
    engine = Engine(source, cascade, OnlineTrainer(cascade, fixed_train.model_copy(update={"mode": "off"})),
                    [ThreadedSink(disk, maxsize=2)], runtime=RuntimeConfig(queue=2, sink_queue=2, overflow=overflow))
    return engine.run(), source, disk


def test_with_block_a_slow_disk_slows_the_source_and_no_frame_is_lost(tmp_path, noise_stack, small_model, fixed_train):
    path, movie = tmp_path / "block.h5", noise_stack[:16]
    status, source, disk = _run_slow_sink(path, movie, "block", small_model, fixed_train)
    assert status.dropped == 0 and status.processed == len(movie)
    # frame k could leave the source only once row k - 6 was being written: 6 frames fit in
    # the input queue (2), the worker (1), the writer's queue (2) and the writer's hands (1)
    held = 6
    assert all(source.sent_at[k] >= disk.started[k - held] for k in range(held, len(movie)))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(len(movie)))
        np.testing.assert_array_equal(f["raw"][:], movie)
        assert f["gaps/first_index"].shape == (0,) and read_counters(f)["dropped"] == 0


def test_with_drop_every_frame_a_slow_disk_costs_is_counted_and_a_gap(tmp_path, noise_stack, small_model, fixed_train):
    path = tmp_path / "drop.h5"
    status, _, _ = _run_slow_sink(path, noise_stack, "drop", small_model, fixed_train)
    assert status.dropped > 0 and status.processed + status.dropped == len(noise_stack) == status.received
    with h5py.File(path, "r") as f:
        kept = f["frames/index"][:].tolist()
        gaps = _gaps(f)
        counters = read_counters(f)
    covered = sorted(a + k for a, c, _ in gaps for k in range(c))
    assert covered == sorted(set(range(len(noise_stack))) - set(kept))  # every dropped frame, none twice
    assert {reason for *_, reason in gaps} == {"dropped"}
    assert (counters["dropped"], counters["processed"], counters["gaps"]) == (status.dropped, len(kept), len(gaps))


# ---- bad frames ----------------------------------------------------------------------------------------

class Frames:
    """An adapter that hands over the frames it is given, numbered from 0."""

    def __init__(self, frames):
        self.frames = frames

    def open(self): ...
    def close(self): ...

    def __iter__(self):
        for i, a in enumerate(self.frames):
            yield Frame(i, float(i), a)


def _flags(f: h5py.File) -> dict[int, int]:
    return {int(i): int(v) for i, v in zip(f["frames/index"][:], f["frames/flags"][:]) if v}


def test_nan_inf_blank_and_misshapen_frames_are_flagged_or_rejected_and_the_run_goes_on(tmp_path, noise_stack, small_model, fixed_train):
    movie = [a.astype(np.float32) for a in np.concatenate([noise_stack, noise_stack])]  # 60 frames
    movie[10][3, 4] = np.nan
    movie[11][:, :5] = np.inf
    movie[15] = np.zeros_like(movie[15])
    movie[25] = movie[25][:, :-1]  # another shape
    path = tmp_path / "bad.h5"
    status, cascade = run_engine(Frames(movie), small_model, fixed_train, path=path)
    assert status.state.value == "finished" and status.processed == 59
    with h5py.File(path, "r") as f:
        flags = _flags(f)
        counters = read_counters(f)
        gaps = _gaps(f)
        slow = f["slow"][:]
        versions = f["frames/model_version"][:]
    assert flags == {10: 1, 11: 1, 15: 2}  # non-finite, non-finite, blank
    assert (counters["nonfinite"], counters["blank"], counters["rejected"]) == (2, 1, 1)
    assert gaps == [(25, 1, "rejected")]
    assert np.isfinite(slow[12:]).all()  # the non-finite pixels stayed in their own frames
    assert versions[-1] > versions[30] > versions[12]  # training went on
    # none of them was trained on: the ring marks their positions invalid
    valid = cascade.ring.valid[cascade.ring.slots(torch.arange(cascade.ring.count))].tolist()
    assert [p for p, ok in enumerate(valid, start=cascade.ring.count - len(valid)) if not ok] == \
        [p for p in (10, 11, 15) if p >= cascade.ring.count - len(valid)]


def test_a_saturated_or_blank_camera_frame_is_flagged_and_the_units_come_from_a_good_frame(tmp_path, noise_stack, small_model, fixed_train):
    movie = list(noise_stack.copy())
    movie[0] = np.zeros_like(movie[0])  # the camera's first frame came out blank
    movie[8] = movie[8].copy()
    movie[8][:, 4:] = np.iinfo(np.uint16).max  # 7/8 of the pixels saturated
    movie[9] = np.full_like(movie[9], np.iinfo(np.uint16).max)
    path = tmp_path / "sat.h5"
    status, cascade = run_engine(Frames(movie), small_model, fixed_train, path=path)
    with h5py.File(path, "r") as f:
        flags = _flags(f)
        counters = read_counters(f)
        slow = f["slow"][:]
    assert flags == {0: 2, 8: 4, 9: 6}  # blank; saturated; both
    assert (counters["blank"], counters["saturated"], counters["processed"]) == (2, 2, len(movie))
    good = noise_stack[1].astype(np.float32)
    assert cascade.norm.offset == pytest.approx(float(np.median(good)))  # not the blank frame's zeros
    assert np.abs(slow[-1] - noise_stack[-8:].mean(0)).mean() < 0.2 * noise_stack.mean()


# ---- training faults -----------------------------------------------------------------------------------

def _diverging_run(path: Path, scene, ratio: float, lr: float = 1.0, spy: list | None = None):
    """The scene through the real engine and file; ``spy`` collects the verdict on each loss
    that exploded."""
    model = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", seed=3, gate_decay=0)  # no gate to hide it
    train = TrainConfig(mode="fixed", steps_per_frame=1, warmup_steps=5, batch=2, crop=16, history=16, lr=lr,
                        diverge_ratio=ratio)
    judge = OnlineTrainer._diverged

    def spying(self, *args):
        verdict = judge(self, *args)
        spy.append(verdict)
        return verdict

    with pytest.MonkeyPatch.context() as mp:
        if spy is not None:
            mp.setattr(OnlineTrainer, "_diverged", spying)
        status, _ = run_engine(ArrayStream(scene.movie), model, train, path=path)
    with h5py.File(path, "r") as f:
        late = slice(50, None)
        return status, read_counters(f), nrmse(f["slow"][late], scene.slow[late])


def test_a_diverging_training_step_is_skipped_and_counted_and_the_last_good_weights_make_the_output(tmp_path):
    scene = make_scene("filaments", frames=90, size=32, seed=1, n_filaments=2, n_spots=4)
    _, counters, calm = _diverging_run(tmp_path / "calm.h5", scene, 10.0, lr=3e-3)
    status, counters, guarded = _diverging_run(tmp_path / "lr1.h5", scene, 10.0)
    assert counters["train_skipped"] == status.train_skipped > 10  # lr = 1.0: every other step blows up
    assert status.train_steps > 20  # the steps that did not diverge were taken
    assert guarded < 1.5 * calm  # the output kept coming from good weights
    _, unguarded_counters, unguarded = _diverging_run(tmp_path / "off.h5", scene, 0.0)
    assert unguarded_counters["train_skipped"] == 0 and unguarded > 1000 * calm  # what the check prevents


def test_a_sudden_change_in_the_data_is_not_taken_for_a_divergence(tmp_path):
    scene = make_scene("filaments", frames=90, size=32, seed=1, n_filaments=2, n_spots=4)
    movie = scene.movie.astype(np.float32)
    level = np.median(movie[50:], axis=(1, 2), keepdims=True)
    movie[50:] = level + 30 * (movie[50:] - level)  # the contrast jumps (another sample, refocused)
    scene.movie = movie  # every loss jumps, whatever the weights
    exploded = []
    status, counters, _ = _diverging_run(tmp_path / "step.h5", scene, 10.0, lr=3e-3, spy=exploded)
    assert exploded and counters["train_skipped"] == 0 and status.train_steps >= 80


# ---- sink faults ---------------------------------------------------------------------------------------

def _tmpfs(folder: Path, size: str, options: str = "") -> bool:
    """Mount a tmpfs of ``size`` at ``folder`` (root only); False where this machine does not allow it."""
    folder.mkdir()
    opts = f"size={size}" + (f",{options}" if options else "")
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True).returncode == 0


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_an_output_that_cannot_be_written_is_refused_before_anything_runs(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    places = [Path("/proc/lagsplit-out.h5")]  # a folder nobody writes in, root included
    ro = tmp_path / "ro"
    if _tmpfs(ro, "1m", "ro"):
        places.append(ro / "out.h5")
    try:
        for out in places:
            res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), *FAST_CLI])
            text = " ".join(res.output.split())
            assert res.exit_code == 2 and f"cannot write in output folder {out.parent}" in text, text
            assert "frames processed" not in text and not out.exists()
    finally:
        _umount(ro)


def _big_stack(tmp_path: Path, frames: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    movie = rng.poisson(100, (frames, 128, 128)).astype(np.uint16)  # 160 KiB a row in the file
    src = tmp_path / "big.npy"
    np.save(src, movie)
    return src, movie


def test_a_disk_filling_up_stops_the_run_cleanly_with_every_frame_kept(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "24m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        src, movie = _big_stack(tmp_path, 300)
        out = disk / "run.h5"
        proc = start("replay", str(src), "--out", str(out), "--fps", "40", "--set", "output.flush_every=5")
        try:
            wait_for_rows(proc, out, 10)
            filler = disk / "other-data"
            with open(filler, "wb") as fh:  # another program fills the disk, all but 3 MiB
                fh.write(b"\0" * (shutil.disk_usage(disk).free - 3 * 2**20))
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        err = " ".join(err.split())
        assert proc.returncode == 1, (err[-3000:], out.stat().st_size, shutil.disk_usage(disk).free)
        kept = int(re.search(r"stopped before it is full; the file keeps the (\d+) frames written so far", err).group(1))
        assert f"{out} is closed and holds {kept} whole frames" in err
        with h5py.File(out, "r") as f:  # closed cleanly: any reader
            assert set(per_frame_lengths(f).values()) == {kept} and kept >= 10
            np.testing.assert_array_equal(f["raw"][:], movie[:kept])
            assert read_counters(f)["sink_errors"] == 1
        filler.unlink()  # room again: the run continues where it stopped
        res = subprocess.run([sys.executable, "-m", "lagsplit", "replay", str(src), "--out", str(out), "--resume",
                              "--set", "source.stop=40", *FAST_CLI], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["frames/index"][:], np.arange(40))
            np.testing.assert_array_equal(f["raw"][:], movie[:40])
    finally:
        _umount(disk)


def _limit_file_size(limit: int):
    def apply() -> None:  # in the child: its files may not grow past ``limit`` bytes (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


def test_a_write_that_fails_mid_run_stops_it_and_the_file_keeps_every_flushed_frame(tmp_path):
    """Where a full disk cannot be staged: the kernel refuses the writes past a file-size
    limit (EFBIG) in the middle of HDF5's flush, as it refuses them on a full disk."""
    src, movie = _big_stack(tmp_path, 80)
    out = tmp_path / "run.h5"
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    res = subprocess.run([sys.executable, "-m", "lagsplit", "replay", str(src), "--out", str(out), "--fps", "100",
                          *FAST_CLI, "--set", "output.flush_every=5"], capture_output=True, text=True, timeout=120,
                         env=env, preexec_fn=_limit_file_size(3_000_000))
    err = " ".join(res.stderr.split())
    assert res.returncode == 1, err  # a clean stop, not a crash
    kept = int(re.search(r"failed \(File too large\); it keeps the (\d+) frames flushed before the error", err).group(1))
    assert f"`lagsplit repair {out}`" in err and kept >= 5
    fixed = CliRunner().invoke(app, ["repair", str(out)])
    assert fixed.exit_code == 0 and f"it keeps {kept} frames" in " ".join(fixed.output.split()), fixed.output
    with h5py.File(out, "r") as f:
        assert set(per_frame_lengths(f).values()) == {kept}
        np.testing.assert_array_equal(f["raw"][:], movie[:kept])
    again = subprocess.run([sys.executable, "-m", "lagsplit", "replay", str(src), "--out", str(out), "--resume",
                            *FAST_CLI], capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(len(movie)))
        np.testing.assert_array_equal(f["raw"][:], movie)


CUT_SHORT = """
import os, sys
import numpy as np
from lagsplit.engine.config import OutputConfig
from lagsplit.engine.contracts import RunInfo
from lagsplit.engine.frame import Decomposition
from lagsplit.engine.hdf5_sink import HDF5Sink

path = sys.argv[1]
sink = HDF5Sink(path, OutputConfig(path=path, flush_every=5, flush_seconds=3600))
sink.setup(RunInfo(shape=(8, 8), dtype="<u2", lags=(4,), source="test", config_json="{}", components=False))
for i in range(12):
    raw = np.full((8, 8), i + 1, np.uint16)
    sink.append(Decomposition(i, float(i), raw, raw.astype(np.float32), np.zeros((8, 8), np.float32), None, None, 0, False))
sink.file.flush()  # rows 10 and 11 reach the disk without /flushed_rows saying so, as in a write cut short
os._exit(0)
"""


def test_rows_past_the_last_whole_flush_are_cut_by_repair(tmp_path):
    out = tmp_path / "short.h5"
    subprocess.run([sys.executable, "-c", CUT_SHORT, str(out)], check=True, timeout=60)
    with h5py.File(out, "r", swmr=True) as f:
        assert f["frames/index"].shape == (12,) and f["flushed_rows"][()] == 10
    res = CliRunner().invoke(app, ["repair", str(out)])
    assert res.exit_code == 0 and "cut 2 row(s) written after its last whole flush" in " ".join(res.output.split())
    with h5py.File(out, "r") as f:
        assert set(per_frame_lengths(f).values()) == {10}
        assert f["raw"][:, 0, 0].tolist() == list(range(1, 11))


# ---- what the user sees --------------------------------------------------------------------------------

def test_the_monitor_and_inspect_show_the_fault_counters(tmp_path, noise_stack):
    movie = np.concatenate([noise_stack, noise_stack]).astype(np.float32)  # 60 frames
    movie[[10, 20]] = np.nan
    movie[30] = 0.0
    src, out = tmp_path / "faulty.npy", tmp_path / "faulty.h5"
    np.save(src, movie)
    res = lagsplit_run("replay", str(src), "--out", str(out), "--fps", "30", "--set", "train.lr=1.0",
                       "--set", "monitor.mode=log", "--set", "monitor.log_every_s=0.5")
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f:
        counters = read_counters(f)
    skipped = counters["train_skipped"]
    assert (counters["nonfinite"], counters["blank"]) == (2, 1) and skipped > 0
    log = " ".join(res.stderr.split())
    assert f"faults: nonfinite 2, blank 1, train_skipped {skipped}" in log  # the monitor's last line
    shown = " ".join(lagsplit_run("inspect", str(out), "--no-config").stdout.split())
    for expected in ("nonfinite 2", "blank 1", f"train_skipped {skipped}", "sink_errors 0", "resumes 0",
                     "flagged frames 2 nonfinite, 1 blank", "resumes none"):
        assert expected in shown, expected

    console = Console(file=io.StringIO(), width=200, color_system="truecolor", force_terminal=True)
    status = dict(processed=57, nonfinite=2, blank=1, saturated=0, train_skipped=skipped, sink_errors=1, resumes=1,
                  not_processed=3)
    console.print(render(_status_like(**status), width=8))
    panel = Text.from_ansi(console.file.getvalue()).plain
    for label, value in (("blank", 1), ("saturated", 0), ("non-finite", 2), ("sink errors", 1),
                         ("not processed", 3), ("resumes", 1)):
        assert re.search(rf"(?<![\w-]){label} +{value}(?!\S)", panel), (label, value, panel)
    assert f"{skipped} skipped" in panel


def _status_like(**counts) -> Status:
    base = dict(state=RunState.RUNNING, reason=None, source="test", device="cpu", lags=(4,), elapsed_s=1.0,
                received=60, processed=60, rejected=0, dropped=0, gaps=0, nonfinite=0, changes=0, queue_depth=0,
                queue_capacity=32, in_rate_hz=30.0, out_rate_hz=30.0, latency_p50_ms=5.0, latency_p99_ms=9.0,
                train_steps=10, train_rate_hz=5.0, train_skipped=0, loss=(0.1,), model_version=10, warmup=False,
                last_index=59, error=None)
    return Status(**{**base, **counts})


def lagsplit_run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    extra = FAST_CLI if args[0] != "inspect" else []
    return subprocess.run([sys.executable, "-m", "lagsplit", args[0], *extra, *args[1:]], capture_output=True,
                          text=True, timeout=120, env=env)
