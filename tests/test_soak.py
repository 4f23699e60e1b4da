"""A long run (opt-in: ``pytest -m soak``): 20,000 small frames through the whole run as the
command line builds it (replay-like source, engine, training thread, HDF5 file, checkpoints),
with resident memory, open files and threads sampled every 1,000 frames. After warm-up they
stay flat. ``LAGSPLIT_WRITE_BENCHMARKS=1`` also writes the figures to BENCHMARKS.md."""
from __future__ import annotations

import os
import threading
import time

import h5py
import numpy as np
import pytest

from lagsplit.app import build_run
from lagsplit.config import load_config
from lagsplit.engine.frame import Frame

FRAMES, EVERY, WARM = 20_000, 1_000, 2_000
COMMAND = "LAGSPLIT_WRITE_BENCHMARKS=1 .venv/bin/pytest -m soak tests/test_soak.py"


class Cycling:
    """A source of ``n`` frames cycling through a small stack (nothing held but the stack)."""

    def __init__(self, stack: np.ndarray, n: int) -> None:
        self.stack, self.n = stack, n

    def open(self): ...
    def close(self): ...

    def __iter__(self):
        for i in range(self.n):
            yield Frame(i, float(i), self.stack[i % len(self.stack)])


def _proc_status() -> dict[str, str]:
    """This process's /proc/self/status (Linux), by field."""
    with open("/proc/self/status") as fh:
        return dict(line.split(":", 1) for line in fh if ":" in line)


class Sampler:
    """A sink that notes the process's resident memory, open files and threads every EVERY rows."""

    def __init__(self) -> None:
        self.rows, self.samples = 0, []

    def setup(self, info): ...
    def skip(self, first_index, count, reason): ...
    def close(self): ...

    def append(self, r) -> None:
        self.rows += 1
        if self.rows % EVERY == 0:
            status = _proc_status()
            self.samples.append((self.rows, int(status["VmRSS"].split()[0]) / 1024, len(os.listdir("/proc/self/fd")),
                                 int(status["Threads"]), threading.active_count()))


@pytest.mark.soak
def test_twenty_thousand_frames_leave_memory_files_and_threads_flat(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.poisson(100, (64, 32, 32)).astype(np.uint16)
    out = tmp_path / "soak.h5"
    cfg = load_config(overrides=[
        f"output.path={out}", "model.lags=[4,2,1]", "model.base_channels=4", "model.levels=1", "model.device=cpu",
        "train.mode=slack", "train.warmup_steps=20", "train.crop=16", "train.batch=2", "train.history=16",
        "monitor.mode=off", "output.checkpoint_every=1000",
    ], env={})
    sampler = Sampler()
    run = build_run(cfg, adapter=Cycling(stack, FRAMES), extra_sinks=[sampler])
    t0 = time.monotonic()
    status = run.engine.run()
    seconds = time.monotonic() - t0
    assert status.state.value == "finished" and status.processed == FRAMES
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(FRAMES))
        assert f["flushed_rows"][()] == FRAMES

    rows, rss, fds, threads, py_threads = (np.array(c) for c in zip(*sampler.samples))
    after = (rows >= WARM) & (rows < FRAMES)  # warm, and the source still running (it has ended by the last row)
    growth = rss[after].max() - rss[after][0]
    table = "\n".join(f"| {r} | {m:.1f} | {fd} | {t} | {p} |" for r, m, fd, t, p in sampler.samples)
    report = (f"## Soak\n\n```\n{COMMAND}\n```\n\n{FRAMES} frames of 32x32 uint16 (the tiny test engine: lags 4, 2, 1, "
              f"training on its own thread, the HDF5 file and a checkpoint every 1000 frames) in {seconds:.0f} s "
              f"({FRAMES / seconds:.0f} frames/s). Resident memory after frame {WARM}: {rss[after][0]:.1f} MiB, at "
              f"most {rss[after].max():.1f} MiB (+{growth:.1f} MiB); from frame {WARM} while the source runs, open files "
              f"{fds[after].min()}..{fds[after].max()}, threads {threads[after].min()}..{threads[after].max()} "
              f"(Python: {py_threads[after].min()}..{py_threads[after].max()}); the last row comes after the "
              f"source thread has ended.\n\n"
              f"| frames | RSS (MiB) | open files | threads | Python threads |\n| --- | --- | --- | --- | --- |\n{table}\n")
    print(report)
    if os.environ.get("LAGSPLIT_WRITE_BENCHMARKS") == "1":
        from lagsplit.benchmarks_md import machine, update_section

        update_section("soak", report + f"\nMachine: {machine()}.\n")
    assert growth < 32, report  # no leak: a few MiB of allocator noise, not a row's worth per frame
    late = rows >= FRAMES // 4
    assert rss[late].max() - rss[late][0] < 8, report  # the HDF5 chunk index grows by bytes a frame, no more
    assert fds[after].max() == fds[after].min(), report
    assert threads[after].max() == threads[after].min(), report
