"""The engine end to end with real parts: HDF5 read back, a second reading process, overflow policies."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from lagsplit.adapters.scenes import make_scene
from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.config import ModelConfig, RuntimeConfig, TrainConfig
from lagsplit.engine.frame import Frame
from lagsplit.engine.hdf5_sink import read_counters
from lagsplit.inspect_file import summarize
from lagsplit.metrics import nrmse, running_median
from tests.support import ListSink, run_engine


def test_replayed_stack_gives_one_row_per_frame_with_index_timestamp_version(tmp_path, noise_stack, small_model, fixed_train):
    path = tmp_path / "out.h5"
    status, _ = run_engine(ArrayStream(noise_stack, first_index=100), small_model, fixed_train, path=path)
    assert status.state.value == "finished"
    with h5py.File(path, "r") as f:
        assert f["slow"].shape == f["fast"].shape == f["raw"].shape == noise_stack.shape
        np.testing.assert_array_equal(f["raw"][:], noise_stack)
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(100, 130))
        ts = f["frames/timestamp"][:]
        assert np.all(np.diff(ts) >= 0) and ts[0] > 1e9  # wall-clock seconds
        ver = f["frames/model_version"][:]
        assert ver[0] == 0 and np.all(np.diff(ver) >= 0) and ver[-1] == f["train/step"][-1] - 1
        assert f["train/loss"].shape == (len(f["train/step"]), 3)
        np.testing.assert_allclose(f["slow"][:] + f["fast"][:], noise_stack.astype(np.float32), atol=1e-3)
        assert f["frames/warmup"][:5].all()
        assert list(f.attrs["lags"]) == [4, 2, 1]
        assert (f["frames/latency_ms"][:] > 0).all()


def test_fixed_mode_is_deterministic(tmp_path, noise_stack, small_model, fixed_train):
    outs = []
    for i in range(2):
        path = tmp_path / f"run{i}.h5"
        run_engine(ArrayStream(noise_stack), small_model, fixed_train, path=path, components=True)
        with h5py.File(path, "r") as f:
            outs.append({k: f[k][:] for k in ("slow", "fast", "components/lag_2", "frames/model_version", "train/loss")})
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k], err_msg=k)


def test_slow_beats_running_median_on_the_synthetic_movie_after_warmup():
    scene = make_scene("filaments", frames=160, size=64, seed=1, n_filaments=4, n_spots=10)
    model = ModelConfig(lags=(8,), base_channels=8, levels=2, device="cpu", seed=0)
    train = TrainConfig(mode="fixed", steps_per_frame=2, warmup_steps=60, batch=8, crop=48, history=48)
    sink = ListSink()
    run_engine(ArrayStream(scene.movie), model, train, sinks=[sink])
    frames = [r.index for r in sink.results if not r.warmup and r.index >= 80]
    assert len(frames) >= 60
    slow = np.stack([sink.results[i].slow for i in frames])
    median = running_median(scene.movie, 16)[frames]
    ours, theirs = nrmse(slow, scene.slow[frames]), nrmse(median, scene.slow[frames])
    assert ours < theirs, (ours, theirs)


class _Burst:
    """A source far faster than the worker: every frame arrives at once."""

    def __init__(self, movie, bad_shape_at=None):
        self.movie, self.bad_shape_at = movie, bad_shape_at

    def open(self): ...
    def close(self): ...

    def __iter__(self):
        for i, a in enumerate(self.movie):
            if i == self.bad_shape_at:
                a = np.zeros((a.shape[0] + 1, a.shape[1]), a.dtype)
            yield Frame(i, float(i), a)


def test_drop_policy_counts_drops_and_records_them_as_gaps(tmp_path, noise_stack, small_model):
    path = tmp_path / "drop.h5"
    slow_train = TrainConfig(mode="fixed", steps_per_frame=20, warmup_steps=1, batch=2, crop=16, history=16)
    status, _ = run_engine(_Burst(noise_stack), small_model, slow_train, path=path,
                           runtime=RuntimeConfig(queue=2, overflow="drop"))
    assert status.dropped > 0
    assert status.processed + status.dropped == len(noise_stack)
    with h5py.File(path, "r") as f:
        idx = f["frames/index"][:]
        assert len(idx) == status.processed
        missing = sorted(set(range(len(noise_stack))) - set(idx.tolist()))
        gaps = list(zip(f["gaps/first_index"][:], f["gaps/count"][:], f["gaps/reason"][:]))
        covered = [a + k for a, c, _ in gaps for k in range(c)]
        # every dropped frame, after the last processed one too, is an explicit gap, reason "dropped" (code 0)
        assert covered == missing
        assert all(r == 0 for _, _, r in gaps)
        counters = read_counters(f)
        assert counters["dropped"] == status.dropped and counters["processed"] == status.processed


class _HeldWorker(ListSink):
    """Holds the worker inside append() of frame ``hold`` until released; signals each append."""

    def __init__(self, hold: int, n: int):
        super().__init__()
        self.hold = hold
        self.appended = [threading.Event() for _ in range(n)]
        self.release = threading.Event()

    def append(self, r):
        super().append(r)
        self.appended[r.index].set()
        if r.index == self.hold:
            assert self.release.wait(10)


def test_frames_dropped_after_the_last_processed_one_are_gaps_in_the_file(tmp_path, noise_stack, small_model, fixed_train):
    """Frames 0-4 are processed one by one; while the worker is held in frame 4, frames 5-9
    and 11 arrive at a queue of 2: 5 and 6 are queued (processed last), 7, 8, 9 and 11 are
    dropped, 10 never comes. All of them end up in /gaps."""
    held = _HeldWorker(hold=4, n=12)

    class Gated(_Burst):
        def __iter__(self):
            for i in range(5):
                if i:
                    assert held.appended[i - 1].wait(10)
                yield Frame(i, float(i), noise_stack[i])
            assert held.appended[4].wait(10)
            for i in (5, 6, 7, 8, 9, 11):
                yield Frame(i, float(i), noise_stack[i])
            held.release.set()

    path = tmp_path / "end.h5"
    status, _ = run_engine(Gated(noise_stack), small_model, fixed_train, path=path, sinks=[held],
                           runtime=RuntimeConfig(queue=2, overflow="drop"))
    assert [r.index for r in held.results] == [0, 1, 2, 3, 4, 5, 6]
    assert status.dropped == 4 and status.gaps == 3
    with h5py.File(path, "r") as f:
        reasons = [str(r) for r in f["gaps"].attrs["reasons"]]
        gaps = [(int(a), int(c), reasons[r]) for a, c, r in zip(f["gaps/first_index"][:], f["gaps/count"][:], f["gaps/reason"][:])]
        counters = read_counters(f)
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(7))
    assert gaps == [(7, 3, "dropped"), (10, 1, "missing"), (11, 1, "dropped")]
    assert (counters["processed"], counters["dropped"], counters["gaps"]) == (7, 4, 3)


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_counters_table_matches_the_counters_a_run_writes(tmp_path, noise_stack, small_model, fixed_train):
    """The README's Counters section (its table, the /counters row, the inspect line and the
    reading snippet) against the file a real run writes."""
    text = README.read_text()
    section = text[text.index("### Counters"):text.index("## The output file")]
    table = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    printed = re.search(r"^ counters +(.*)$", section, flags=re.M).group(1).split()[::2]
    shape = int(re.search(r"^\| `/counters` \| \((\d+),\) int64 \|", text, flags=re.M).group(1))
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)

    path = tmp_path / "run.h5"
    run_engine(ArrayStream(noise_stack[:8]), small_model, fixed_train, path=path)
    with h5py.File(path, "r") as f:
        names = [str(n) for n in f["counters"].attrs["names"]]
        assert f["counters"].shape == (len(names),)
        scope = {"f": f}
        exec(snippet, scope)  # the README's way of reading them
        counters = scope["counters"]
        assert counters == read_counters(f)
    assert table == printed == names and shape == len(names)
    assert counters["processed"] == 8 and counters["received"] == 8
    assert summarize(path)["counters"] == counters  # what `lagsplit inspect` prints


def test_block_policy_never_drops(noise_stack, small_model):
    slow_train = TrainConfig(mode="fixed", steps_per_frame=5, warmup_steps=1, batch=2, crop=16, history=16)
    status, _ = run_engine(_Burst(noise_stack), small_model, slow_train, runtime=RuntimeConfig(queue=2, overflow="block"))
    assert status.dropped == 0 and status.processed == len(noise_stack)


def test_frame_of_another_shape_is_rejected_counted_and_recorded(tmp_path, noise_stack, small_model, fixed_train):
    path = tmp_path / "rej.h5"
    status, _ = run_engine(_Burst(noise_stack, bad_shape_at=7), small_model, fixed_train, path=path)
    assert status.rejected == 1 and status.processed == len(noise_stack) - 1
    with h5py.File(path, "r") as f:
        assert 7 not in f["frames/index"][:]
        assert (f["gaps/first_index"][:].tolist(), f["gaps/count"][:].tolist(), f["gaps/reason"][:].tolist()) == ([7], [1], [1])


def test_failing_sink_stops_the_run_cleanly_and_every_sink_is_closed(noise_stack, small_model, fixed_train):
    class Broken(ListSink):
        def append(self, r):
            if r.index == 5:
                raise OSError("No space left on device")
            super().append(r)

    broken, other = Broken(), ListSink()
    status, _ = run_engine(ArrayStream(noise_stack), small_model, fixed_train, sinks=[broken, other])
    assert status.state.value == "failed" and "No space left" in status.error
    assert broken.closed and other.closed
    assert len(broken.results) == 5


READER = textwrap.dedent("""
    import sys, time, h5py
    path, want = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with h5py.File(path, "r", swmr=True) as f:
                ds = f["slow"]
                while time.monotonic() < deadline:
                    ds.refresh(); f["frames/index"].refresh()
                    n = ds.shape[0]
                    if n >= want:
                        print(n, int(f["frames/index"][n - 1]), float(ds[n - 1].mean()), flush=True)
                        sys.exit(0)
                    time.sleep(0.05)
        except (OSError, KeyError):
            time.sleep(0.05)
    sys.exit(3)
""")


def test_a_second_process_reads_the_file_while_the_run_is_live(tmp_path, noise_stack, small_model, fixed_train):
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.config import OutputConfig
    from lagsplit.engine.engine import Engine
    from lagsplit.engine.hdf5_sink import HDF5Sink
    from lagsplit.engine.threaded_sink import ThreadedSink
    from lagsplit.engine.trainer import OnlineTrainer

    path = tmp_path / "live.h5"
    movie = np.concatenate([noise_stack] * 4)  # 120 frames at 40 fps: ~3 s live
    cascade = Cascade(small_model, fixed_train.history, fixed_train.warmup_steps)
    sink = ThreadedSink(HDF5Sink(path, OutputConfig(path=str(path), flush_every=2)))
    engine = Engine(ArrayStream(movie, fps=40), cascade, OnlineTrainer(cascade, fixed_train), [sink])
    engine.start()
    try:
        reader = subprocess.run([sys.executable, "-c", READER, str(path), "10"], capture_output=True, text=True, timeout=90)
        live_when_read = not engine.done
    finally:
        engine.stop()
        engine.wait()
    assert reader.returncode == 0, reader.stderr
    n, last_index, mean = reader.stdout.split()
    assert int(n) >= 10 and int(last_index) == int(n) - 1 and np.isfinite(float(mean))
    assert live_when_read, "the reader should have seen rows before the run finished"


def test_killed_run_leaves_a_file_readable_up_to_the_last_flush(tmp_path, noise_stack):
    stack = tmp_path / "stack.npy"
    np.save(stack, np.concatenate([noise_stack] * 10))
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "lagsplit", "replay", str(stack), "--out", str(out), "--fps", "30",
           "--set", "model.lags=[4,2,1]", "--set", "model.base_channels=4", "--set", "model.levels=1",
           "--set", "train.mode=fixed", "--set", "output.flush_every=5", "--set", "monitor.mode=off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 60
        rows = 0
        while time.monotonic() < deadline and rows < 20:
            time.sleep(0.2)
            try:
                with h5py.File(out, "r", swmr=True) as f:
                    rows = f["slow"].shape[0]
            except (OSError, KeyError):
                pass
        assert rows >= 20, proc.stderr.read().decode() if proc.poll() is not None else "no rows"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    with h5py.File(out, "r", swmr=True) as f:
        n = f["slow"].shape[0]
        assert n >= 20
        np.testing.assert_array_equal(f["frames/index"][:n], np.arange(n))
        assert np.isfinite(f["slow"][n - 1]).all()


class _Lossy(_Burst):
    """An adapter that rejects frame 4 itself and says so through the optional lost() hook."""

    def __init__(self, movie):
        super().__init__(movie)
        self._lost = {}

    def lost(self):
        out, self._lost = self._lost, {}
        return out

    def __iter__(self):
        for f in super().__iter__():
            if f.index == 4:
                self._lost[4] = "rejected"
                continue
            yield f


def test_frames_an_adapter_rejected_are_gaps_of_reason_rejected_and_silent_jumps_are_missing(tmp_path, noise_stack, small_model, fixed_train):
    path = tmp_path / "lossy.h5"
    movie = noise_stack[:12]

    class Jumpy(_Lossy):
        def __iter__(self):
            for f in super().__iter__():
                if f.index not in (8, 9):
                    yield f

    run_engine(Jumpy(movie), small_model, fixed_train, path=path)
    with h5py.File(path, "r") as f:
        gaps = list(zip(f["gaps/first_index"][:].tolist(), f["gaps/count"][:].tolist(), f["gaps/reason"][:].tolist()))
    assert gaps == [(4, 1, 1), (8, 2, 2)]  # 1 = rejected, 2 = missing


def test_duplicate_or_backward_frame_numbers_are_rejected(noise_stack, small_model, fixed_train):
    class Repeating(_Burst):
        def __iter__(self):
            for f in super().__iter__():
                yield f
                if f.index == 3:
                    yield Frame(2, 2.0, f.array)  # backwards
                    yield Frame(3, 3.0, f.array)  # duplicate

    sink = ListSink()
    status, _ = run_engine(Repeating(noise_stack[:8]), small_model, fixed_train, sinks=[sink])
    assert [r.index for r in sink.results] == list(range(8))
    assert status.rejected == 2 and sink.skips == []


def test_a_source_that_cannot_open_fails_cleanly_and_closes_every_sink(small_model, fixed_train):
    class Unopenable(_Burst):
        def open(self):
            raise OSError("camera not found")

    sink = ListSink()
    with pytest.raises(OSError, match="camera not found"):
        run_engine(Unopenable(np.zeros((3, 4, 4))), small_model, fixed_train, sinks=[sink])
    assert sink.closed


def test_every_row_records_how_much_of_the_network_slow_used(tmp_path, noise_stack, small_model, fixed_train):
    """/frames/gate: NaN on rows whose slow came from statistics (warm-up), the gate's share
    (one of 0, 1/4 ... 1) where the slow network was used; the status, the monitor and
    inspect show it."""
    from lagsplit.engine.cascade import CorrectionGate
    from lagsplit.engine.monitor import log_line

    path = tmp_path / "run.h5"
    status, cascade = run_engine(ArrayStream(noise_stack), small_model, fixed_train, path=path)
    with h5py.File(path, "r") as f:
        gate, warm = f["frames/gate"][:], f["frames/warmup"][:].astype(bool)
    assert warm.any() and (~warm).any()
    assert np.isnan(gate[warm]).all()
    assert set(gate[~warm].tolist()) <= set(CorrectionGate.GAINS)
    assert status.gate == gate[-1] and f"gate {gate[-1]:.2f}" in log_line(status)
    summary = summarize(path)["gate"]
    assert summary["rows"] == int((~warm).sum()) and sum(summary["shares"].values()) == summary["rows"]

    ungated = small_model.model_copy(update={"gate_decay": 0.0})  # the network's slow used whole
    _, _ = run_engine(ArrayStream(noise_stack), ungated, fixed_train, path=tmp_path / "ungated.h5")
    with h5py.File(tmp_path / "ungated.h5", "r") as f:
        gate, warm = f["frames/gate"][:], f["frames/warmup"][:].astype(bool)
    assert (gate[~warm] == 1.0).all() and np.isnan(gate[warm]).all()
