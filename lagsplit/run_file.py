"""A lagsplit run (an HDF5 file or an OME-Zarr store) as inspect, export and the viewers
read it: one interface, ``RunFile``, for both formats (``open_run``); is it a run, which
images it holds, the physical scale the run knew (pixel size, frame interval, channel name)
and the per-row facts (acquisition frame number, warm-up, gaps) that label each row.

Layout and attributes: docs/design.md (HDF5 output, OME-Zarr output) and README ("The
output file")."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import h5py
import numpy as np

from lagsplit.engine.hdf5_sink import GAP_REASONS, committed_rows, read_counters
from lagsplit.engine.outputs import HDF5_SUFFIXES, is_zarr_path
from lagsplit.engine.superblock import open_for_write

IMAGE_NAMES = ("raw", "slow", "fast")
"""The (T, H, W) images a viewer or export shows, in this order (raw is optional)."""


class NotARunFile(ValueError):
    """The file is not one that lagsplit wrote (names the file and what is missing)."""


class RunFile(Protocol):
    """A run open for reading, also while a run writes it. Arrays go by the HDF5 layout's
    names (``slow``, ``components/lag_4``, ``frames/index``, ``gaps/count``, ``counters``,
    ``resumes/row`` ...); each has ``shape``, ``dtype``, ``ndim``, ``len`` (its first axis)
    and numpy indexing, read from the file when indexed."""

    path: str
    attrs: Any
    """The run's attributes (lags, source, shape, input_dtype, pixel_size_um, ...)."""

    def __contains__(self, name: str) -> bool: ...
    def __getitem__(self, name: str) -> Any: ...
    def arrays(self) -> list[str]:
        """Every array the run holds, by name."""
    def whole_rows(self) -> int:
        """Rows that every per-frame array holds whole (what a killed run keeps)."""
    def counters(self) -> dict[str, int]:
        """The run's counters by name; {} when it has none."""
    def refresh(self) -> None:
        """See what the writer has flushed since the run was opened."""
    def close(self) -> None: ...
    def __enter__(self) -> RunFile: ...
    def __exit__(self, *exc) -> None: ...

    @property
    def config(self) -> dict:
        """The effective config the run was written with."""

    @property
    def open_for_write(self) -> bool:
        """A writer has it open: a run is writing it, or its writer was killed."""


class H5Run:
    """A lagsplit HDF5 file as a ``RunFile`` (opened as a SWMR reader)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.file = h5py.File(path, "r", swmr=True)
        self.attrs = self.file.attrs
        self._open_for_write = open_for_write(path)

    def __contains__(self, name: str) -> bool:
        node = self.file.get(name)
        return isinstance(node, h5py.Dataset) or (isinstance(node, h5py.Group) and "/" not in name)

    def __getitem__(self, name: str) -> h5py.Dataset:
        return self.file[name]

    def arrays(self) -> list[str]:
        names: list[str] = []
        self.file.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return names

    def whole_rows(self) -> int:
        return committed_rows(self.file)

    def counters(self) -> dict[str, int]:
        if not isinstance(self.file.get("counters"), h5py.Dataset) or "names" not in self.file["counters"].attrs:
            return {}
        return read_counters(self.file)

    def refresh(self) -> None:
        # the datasets a follower reads, no more: refreshing a dataset that another handle of
        # this process holds open can corrupt HDF5's metadata cache ("duplicate key")
        for name in (*IMAGE_NAMES, *(f"frames/{k}" for k in ("index", "timestamp", "warmup", "latency_ms")),
                     "gaps/first_index", "gaps/count", "gaps/reason", "counters"):
            if name in self:
                self.file[name].refresh()

    @property
    def config(self) -> dict:
        return json.loads(self.attrs.get("config", "{}"))

    @property
    def open_for_write(self) -> bool:
        return self._open_for_write

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> H5Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_run_file(f: RunFile, where: str | os.PathLike = "") -> None:
    """NotARunFile unless ``f`` has what every lagsplit output has: the ``lagsplit_version``
    and ``lags`` attributes, slow and fast of three dimensions, frames/index."""
    where = where or f.path
    missing = [a for a in ("lagsplit_version", "lags") if a not in f.attrs]
    missing += [d for d in ("slow", "fast", "frames/index") if d not in f]
    if missing:
        kind = " store (written by another program?)" if is_zarr_path(where) else " file"
        raise NotARunFile(f"{where} is not a lagsplit output{kind}: it lacks {', '.join(missing)}")
    if f["slow"].ndim != 3 or f["fast"].ndim != 3:
        raise NotARunFile(f"{where}: slow and fast are not (T, H, W) stacks")


def is_run_path(path: str | os.PathLike) -> bool:
    """True for a name a run is written under: an .h5 / .hdf5 file or an .ome.zarr folder."""
    path = os.fspath(path)
    if is_zarr_path(path):
        return os.path.isdir(path)
    return path.lower().endswith(HDF5_SUFFIXES) and os.path.isfile(path)


def open_run(path: str | os.PathLike) -> RunFile:
    """The run open for reading, also while a run still writes it; NotARunFile for a file or
    store of another kind, OSError for one that cannot be opened (yet), ExtraMissing for an
    OME-Zarr store without the zarr extra installed."""
    if is_zarr_path(path):
        from lagsplit.extras import ZARR, require

        require(f"reading {os.fspath(path)}", "zarr", ZARR)
        from lagsplit.engine.zarr_sink import ZarrRun

        f: RunFile = ZarrRun(path)
    else:
        f = H5Run(path)
    try:
        check_run_file(f, path)
    except BaseException:
        f.close()
        raise
    return f


def is_run_file(path: str | os.PathLike) -> bool:
    """True for a file or store that lagsplit wrote; False for anything else (never raises)."""
    try:
        with open_run(path):
            return True
    except (OSError, ValueError, RuntimeError):
        return False


@dataclass(frozen=True)
class Scale:
    """What the run knew of the physical world. None where the source did not say."""

    pixel_size_um: tuple[float, float] | None = None
    """Pixel size (y, x) in micrometres."""
    frame_interval_s: float | None = None
    """Time between two acquisition frames, seconds."""
    channel_name: str | None = None
    """Name of the channel the run split (e.g. "GFP")."""

    def tyx(self) -> tuple[float, float, float]:
        """(t, y, x) scale for a viewer: seconds and micrometres where known, else 1 per frame / pixel."""
        py, px = self.pixel_size_um or (1.0, 1.0)
        return (self.frame_interval_s or 1.0, py, px)

    def units(self) -> tuple[str, str, str]:
        """Units of ``tyx()``: "s" / "um" where known, else "pixel" (napari's unit for none)."""
        return ("s" if self.frame_interval_s else "pixel",) + (("um",) * 2 if self.pixel_size_um else ("pixel",) * 2)


def read_scale(f: RunFile) -> Scale:
    """The ``pixel_size_um``, ``frame_interval_s`` and ``channel_name`` attributes (absent,
    zero or non-finite values read as unknown)."""
    px = f.attrs.get("pixel_size_um")
    pixel = None
    if px is not None:
        arr = np.atleast_1d(np.asarray(px, dtype=np.float64))
        pair = (float(arr[0]), float(arr[-1])) if arr.size in (1, 2) else None
        if pair and all(np.isfinite(v) and v > 0 for v in pair):
            pixel = pair
    dt = f.attrs.get("frame_interval_s")
    interval = float(dt) if dt is not None and np.isfinite(float(dt)) and float(dt) > 0 else None
    name = f.attrs.get("channel_name")
    name = name.decode() if isinstance(name, bytes) else (str(name) if name is not None else None)
    return Scale(pixel, interval, name or None)


def acquisition_times(f: RunFile) -> bool:
    """True when the run's /frames/timestamp are the times the acquisition recorded (the
    ``timestamp_origin`` attribute its source set, engine/contracts.py), not the moments
    frames were played or received; False for a file without the attribute."""
    origin = f.attrs.get("timestamp_origin")
    return (origin.decode() if isinstance(origin, bytes) else str(origin)) == "acquisition"


@dataclass
class Rows:
    """Per-row facts of rows ``first .. first + len(index) - 1`` of a run file."""

    first: int
    index: np.ndarray
    """Acquisition frame number of each row."""
    timestamp: np.ndarray
    """Acquisition time of each row, seconds."""
    warmup: np.ndarray
    """True where the row was split during warm-up (running-median slow)."""
    latency_ms: np.ndarray
    gaps: list[dict] = field(default_factory=list)
    """Every gap of the run: first_index, count, reason (dropped / rejected / missing)."""
    t0: float = float("nan")
    """Timestamp of the run's first row: labels give times from it."""

    def gap_before(self, row: int) -> list[dict]:
        """The gaps that end right before the frame of ``row`` (a file row number)."""
        i = row - self.first
        if not 0 <= i < len(self.index):
            return []
        frame = int(self.index[i])
        return [g for g in self.gaps if g["first_index"] + g["count"] == frame]

    def label(self, row: int) -> str:
        """What a viewer shows for ``row``: its frame number, time, warm-up and the gap before it."""
        i = row - self.first
        if not 0 <= i < len(self.index):
            return ""
        parts = [f"frame {int(self.index[i])}"]
        if np.isfinite(self.t0) and np.isfinite(self.timestamp[i]):
            parts.append(f"t {self.timestamp[i] - self.t0:.2f} s")
        if self.warmup[i]:
            parts.append("warm-up")
        parts += [f"after {g['count']} {g['reason']}" for g in self.gap_before(row)]
        return " · ".join(parts)


def read_gaps(f: RunFile) -> list[dict]:
    """The gaps as a list of {first_index, count, reason}."""
    if "gaps/first_index" not in f:
        return []
    n = min(len(f[f"gaps/{k}"]) for k in ("first_index", "count", "reason"))
    return [{"first_index": int(a), "count": int(c), "reason": GAP_REASONS[int(r)]}
            for a, c, r in zip(f["gaps/first_index"][:n], f["gaps/count"][:n], f["gaps/reason"][:n])]


def read_rows(f: RunFile, start: int = 0, stop: int | None = None) -> Rows:
    """Per-row facts of rows ``start`` up to (not including) ``stop``."""
    n = len(f["frames/index"])
    stop = n if stop is None else min(stop, n)
    sl = slice(start, stop)
    t0 = float(f["frames/timestamp"][0]) if n else float("nan")
    return Rows(start, f["frames/index"][sl], f["frames/timestamp"][sl], f["frames/warmup"][sl].astype(bool),
                f["frames/latency_ms"][sl], read_gaps(f), t0)


def read_counters_safe(f: RunFile) -> dict[str, int]:
    """The run's counters by name (processed, dropped, rejected, ...); {} for a run without them."""
    return f.counters()


def image_names(f: RunFile) -> list[str]:
    """Which of raw, slow, fast the run holds, in that order."""
    return [n for n in IMAGE_NAMES if n in f]


def contrast_limits(ds, rows: int | None = None, samples: int = 8, signed: bool = False) -> tuple[float, float]:
    """Display range from up to ``samples`` rows spread over the first ``rows`` rows of a
    (T, H, W) dataset: 0.1 and 99.9 percentiles (``signed``: 0 to the 99.9 percentile, for
    fast, whose negative part is noise around the slow estimate)."""
    n = len(ds) if rows is None else rows
    if n == 0:
        return (0.0, 1.0)
    picks = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
    sample = np.stack([np.asarray(ds[int(i)], dtype=np.float32) for i in picks])
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, (0.1, 99.9)))
    if signed:
        lo = 0.0
    if not hi > lo:
        hi = lo + 1.0
    return (lo, hi)
