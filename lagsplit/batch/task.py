"""One batch task, as a Dask worker runs it: replay one plane stream (or one ``--split``
chunk of it) into its partial output with ``--resume`` semantics, then move the finished
output to its place. The partial output is what makes a task safe to run again: a task
that a killed worker left half done continues after the file's last row; one that
finished before the rename only renames."""
from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lagsplit.config import Config

log = logging.getLogger("lagsplit")

PROGRESS_TOPIC = "lagsplit-batch-progress"
PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True)
class Task:
    """What one task plays and writes. ``config`` is the replay's whole config, its output
    the partial file (``output.resume`` set); ``final`` is where the file goes when done
    (None: a ``--split`` chunk, which the merge task takes)."""

    key: str
    name: str
    config: Config
    partial: Path
    final: Path | None
    frames: int
    """Frames the task plays when it starts afresh (for the progress display)."""


@dataclass(frozen=True)
class Outcome:
    """How a task ended: ``status`` is ``ok``, ``failed`` or ``cancelled``; ``frames`` the
    rows its output holds, ``warmup_frames`` those written during warm-up, ``seconds`` the
    task's own time on its worker (building the run included)."""

    key: str
    status: str
    frames: int = 0
    warmup_frames: int = 0
    seconds: float = 0.0
    error: str = ""
    worker: str = ""
    resumed: bool = False


def _frame_sized_buffers_stay_mapped() -> None:
    """Dask's nanny starts a worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory
    back to the system sooner), which also fixes glibc's mmap threshold at 128 KiB: every
    frame-sized buffer the engine frees is unmapped, and mapped and faulted in anew for the
    next frame, making a task take about 1.5 times as long. Where that variable is set, the
    thresholds go back to glibc's largest defaults (a trim threshold of 64 MiB, buffers
    under 32 MiB from the heap). A no-op elsewhere."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): the variable means nothing there
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 64 << 20)
    libc.mallopt(m_mmap_threshold, 32 << 20)


def _worker():
    """The Dask worker running this task, or None outside one (a test calling run_task)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


class _StopFlag:
    """The batch's stop flag (a ``distributed.Event`` named by the client), read at most
    once a second: the client sets it on Ctrl-C so running tasks close their files."""

    def __init__(self, name: str | None) -> None:
        self.event = None
        if name and _worker() is not None:
            from distributed import Event

            self.event = Event(name)

    def is_set(self) -> bool:
        try:
            return self.event is not None and self.event.is_set()
        except Exception:  # noqa: BLE001 - the scheduler is going away: the client stops the tasks
            return False


def output_rows(path: Path) -> tuple[int, int]:
    """(rows, rows written in warm-up) of a lagsplit output (an HDF5 file or an OME-Zarr store)."""
    from lagsplit.run_file import open_run

    with open_run(path) as f:
        rows = f.whole_rows()
        warm = int(np.count_nonzero(f["frames/warmup"][:rows])) if rows else 0
    return rows, warm


def finish_output(partial: Path, final: Path) -> None:
    """Move a finished output (and its checkpoint) to its place: the checkpoint first, the
    file last, so an output at ``final`` is always whole."""
    from lagsplit.engine.checkpoint import checkpoint_path

    final.parent.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(partial)
    if ckpt.exists():
        os.replace(ckpt, checkpoint_path(final))
    os.replace(partial, final)


def run_task(task: Task, stop_name: str | None = None) -> Outcome:
    """Play ``task`` to its end on this worker (one torch thread), reporting progress to the
    client; its errors come back as a ``failed`` outcome naming them."""
    import torch

    from lagsplit.adapters.stacks import StackError
    from lagsplit.app import NothingToResume, build_run
    from lagsplit.engine.hdf5_sink import OutputError
    from lagsplit.engine.status import RunState

    t0 = time.perf_counter()
    worker = _worker()
    where = "" if worker is None else str(worker.address)
    flag = _StopFlag(stop_name)
    if flag.is_set():  # the batch was stopped before this task started
        return Outcome(task.key, "cancelled", worker=where)
    torch.set_num_threads(1)
    _frame_sized_buffers_stay_mapped()
    resumed = task.partial.exists()
    stopped = False
    try:
        task.partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            run = build_run(task.config)
        except NothingToResume:  # the file holds every frame: a task that ended before its rename
            run = None
        if run is not None:
            stopped = _play(run, task, worker, flag)
            status = run.engine.status()
            if status.state is RunState.FAILED:
                raise RuntimeError(status.error or "the run failed")
        if not stopped and task.final is not None:
            finish_output(task.partial, task.final)
        rows, warm = output_rows(task.final if task.final is not None and not stopped else task.partial)
    except (StackError, OutputError, OSError, ValueError, RuntimeError, KeyError) as exc:
        log.error("%s failed: %s", task.name, exc)
        return Outcome(task.key, "failed", seconds=time.perf_counter() - t0, error=str(exc), worker=where,
                       resumed=resumed)
    return Outcome(task.key, "cancelled" if stopped else "ok", rows, warm, time.perf_counter() - t0, worker=where,
                   resumed=resumed)


def _play(run, task: Task, worker, flag: _StopFlag) -> bool:
    """Run the engine to its end, reporting progress; True when the batch's stop flag ended it."""
    engine = run.engine
    stopped = False
    engine.start()
    try:
        while not engine.wait(PROGRESS_EVERY_S):
            if worker is not None:
                st = engine.status()
                worker.log_event(PROGRESS_TOPIC, {"key": task.key, "processed": st.processed,
                                                  "already": st.already_done, "frames": task.frames})
            if not stopped and flag.is_set():
                stopped = True
                engine.stop()
    finally:
        if not engine.done:  # an error here: the file is closed with what it holds
            engine.stop()
            engine.wait()
    return stopped
