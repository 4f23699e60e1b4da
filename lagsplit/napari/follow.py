"""Following a run file while a run writes it: ``lagsplit view FILE --follow`` and the
"Follow a lagsplit run" dock widget.

A worker thread (napari's ``thread_worker``) opens the run (an HDF5 file in SWMR mode, or
an OME-Zarr store) and, every ``interval_s``, refreshes it and reads the rows flushed since
the last look;
the main thread appends them to the layers ``raw``, ``slow`` and ``fast``. The layers
hold the last ``keep`` rows (``FrameWindow``), so memory stays bounded however long the
run. The newest frame is shown unless the user has moved the time slider off it;
moving it back to the end follows again. The dock widget shows the run's counters
(processed, dropped, rejected) and the median latency of the rows held, and the
viewer's text overlay names the frame on screen (number, time, warm-up, gap before it).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lagsplit.run_file import (
    NotARunFile,
    Rows,
    RunFile,
    Scale,
    image_names,
    open_run,
    read_counters_safe,
    read_gaps,
    read_rows,
    read_scale,
)

FRESH_S = 5.0
"""A file that does not look like a run file yet is waited for while it changed this recently (s)."""
MAX_FAILURES = 25
"""Looks in a row that may fail to read the file (a race with the writer) before following stops."""
KEEP_MIB = 512
"""Memory for the rows held when ``keep`` is not given (MiB, all channels together)."""


@dataclass
class Update:
    """Rows ``first_row ..`` read from the file in one look, and the run's state then."""

    first_row: int
    images: dict[str, np.ndarray]
    rows: Rows
    total: int
    """Rows in the file (every dataset holds them)."""
    counters: dict[str, int]
    scale: Scale
    path: str
    source: str = ""
    lags: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows.index)

    def nothing_new(self, first_row: int) -> Update:
        """This update's state with no rows (a look that found nothing it could read)."""
        r = self.rows
        rows = Rows(first_row, r.index[:0], r.timestamp[:0], r.warmup[:0], r.latency_ms[:0], r.gaps, r.t0)
        return replace(self, first_row=first_row, images={k: v[:0] for k, v in self.images.items()}, rows=rows)


def default_keep(frame_shape: tuple[int, int], dtypes: list[np.dtype], mib: int = KEEP_MIB) -> int:
    """Rows to keep so that a FrameWindow of these channels fits in ``mib`` MiB (at least 8)."""
    row = int(np.prod(frame_shape)) * sum(np.dtype(d).itemsize for d in dtypes)
    return max(8, int((mib << 20) / max(1, row) / 1.5))


class RunFollower:
    """Reads what a run has flushed since the last ``poll`` (no Qt: runs on any thread).

    ``poll`` returns None while the run cannot be opened yet (the run has not created it,
    or not switched an HDF5 file to SWMR), else an Update (maybe of no rows). At most the last ``keep``
    new rows are read: rows older than those are never read at all."""

    def __init__(self, path: str | os.PathLike, keep: int | None = None) -> None:
        self.path = Path(path)
        self.keep = keep
        self.file: RunFile | None = None
        self.done = 0
        self.failures = 0
        self._last: Update | None = None

    def poll(self) -> Update | None:
        f = self.file
        if f is None:
            f = self._open()
            if f is None:
                return None
        try:
            upd = self._read(f)
        except (OSError, RuntimeError, ValueError) as exc:
            # HDF5 can refuse a refresh that races the writer ("invalid dataset size"): look
            # again with the file opened afresh; give up only when it keeps failing
            self.failures += 1
            self.close()
            if self.failures >= MAX_FAILURES:
                raise OSError(f"{self.path}: {self.failures} looks in a row failed: {exc}") from exc
            return None if self._last is None else self._last.nothing_new(self.done)
        self.failures = 0
        self._last = upd
        return upd

    def _read(self, f: RunFile) -> Update:
        f.refresh()
        names = image_names(f)
        total = min(len(f[n]) for n in [*names, "frames/index", "frames/timestamp", "frames/warmup",
                                          "frames/latency_ms"])
        if self.keep is None:
            self.keep = default_keep(f["slow"].shape[1:], [f[n].dtype for n in names])
        start = max(self.done, total - self.keep)
        images = {n: f[n][start:total] for n in names}
        rows = read_rows(f, start, total)
        rows.gaps = read_gaps(f)
        self.done = total
        return Update(start, images, rows, total, read_counters_safe(f), read_scale(f), str(self.path),
                      str(f.attrs.get("source", "")), [int(x) for x in f.attrs["lags"]])

    def _open(self) -> RunFile | None:
        if not self.path.exists():
            return None
        try:
            self.file = open_run(self.path)
        except OSError:
            return None  # still being created, or not in SWMR mode yet
        except NotARunFile:
            if time.time() - self.path.stat().st_mtime < FRESH_S:
                return None  # a run may be writing its first attributes
            raise  # a file of another kind: following it would never work
        return self.file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class FrameWindow:
    """The last ``keep`` rows of each channel, and their per-row facts. They are stored in
    arrays of ``1.5 keep`` rows: when those are full, the rows that stay move to the front
    in one copy (one row copied per row added, on average; never a copy of the whole
    window per frame). ``data`` is a view of the last ``keep`` rows, oldest first."""

    def __init__(self, keep: int) -> None:
        self.keep = max(1, int(keep))
        self.capacity = self.keep + max(1, self.keep // 2)
        self._base = 0  # file row of stored row 0
        self._stored = 0
        self._images: dict[str, np.ndarray] = {}
        self._facts: dict[str, np.ndarray] = {}
        self.gaps: list[dict] = []
        self.t0 = float("nan")

    @property
    def n(self) -> int:
        """Rows held (at most ``keep``)."""
        return min(self._stored, self.keep)

    @property
    def first_row(self) -> int:
        """File row of the oldest row held."""
        return self._base + self._stored - self.n

    def extend(self, upd: Update) -> int:
        """Append the update's rows; returns how many rows left the front of the window."""
        k = len(upd)
        self.gaps, self.t0 = upd.rows.gaps, upd.rows.t0
        if k == 0:
            return 0
        facts = {"index": upd.rows.index, "timestamp": upd.rows.timestamp, "warmup": upd.rows.warmup,
                 "latency_ms": upd.rows.latency_ms}
        if not self._images:
            self._images = {n: np.empty((self.capacity, *a.shape[1:]), a.dtype) for n, a in upd.images.items()}
            self._facts = {n: np.empty(self.capacity, a.dtype) for n, a in facts.items()}
            self._base = upd.first_row
        before = self.first_row
        take = slice(max(0, k - self.keep), k)  # an update longer than the window keeps its end
        m = k - take.start
        if upd.first_row != self._base + self._stored or take.start:  # rows skipped: start over
            self._base, self._stored = upd.first_row + take.start, 0
        if self._stored + m > self.capacity:  # move the rows that stay to the front
            stay = self.keep - m
            gone = self._stored - stay
            for arr in (*self._images.values(), *self._facts.values()):
                arr[:stay] = arr[gone:self._stored]
            self._base, self._stored = self._base + gone, stay
        at = slice(self._stored, self._stored + m)
        for name, arr in upd.images.items():
            self._images[name][at] = arr[take]
        for name, arr in facts.items():
            self._facts[name][at] = arr[take]
        self._stored += m
        return max(0, self.first_row - before)

    def data(self, name: str) -> np.ndarray:
        """The rows held of channel ``name`` (a view, oldest first)."""
        return self._images[name][self._stored - self.n:self._stored]

    def rows(self) -> Rows:
        f = {k: v[self._stored - self.n:self._stored] for k, v in self._facts.items()}
        return Rows(self.first_row, f["index"], f["timestamp"], f["warmup"], f["latency_ms"], self.gaps, self.t0)


def poll_forever(follower: RunFollower, interval_s: float):
    """The worker's generator: an Update (or None while the file is not ready) every
    ``interval_s`` seconds; napari's worker ends it at a ``yield`` when asked to quit.
    An error (e.g. the file is not a run file) is yielded once, and the loop ends."""
    try:
        while True:
            try:
                upd = follower.poll()
            except Exception as exc:  # noqa: BLE001 - shown in the widget, not raised on a thread
                yield exc
                return
            yield upd
            time.sleep(interval_s)
    finally:
        follower.close()
