"""A lagsplit HDF5 file as viewers and exporters read it: is it one, which image datasets
it holds, the physical scale the run knew (pixel size, frame interval, channel name) and
the per-row facts (acquisition frame number, warm-up, gaps) that label each row.

Layout and attributes: docs/design.md (HDF5 output) and README ("The output file")."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from lagsplit.engine.hdf5_sink import GAP_REASONS, read_counters

IMAGE_NAMES = ("raw", "slow", "fast")
"""The (T, H, W) image datasets a viewer or export shows, in this order (raw is optional)."""


class NotARunFile(ValueError):
    """The file is not an HDF5 file that lagsplit wrote (names the file and what is missing)."""


def check_run_file(f: h5py.File, where: str | os.PathLike = "") -> None:
    """NotARunFile unless ``f`` has what every lagsplit output has: the ``lagsplit_version``
    and ``lags`` attributes, /slow and /fast of three dimensions, /frames/index."""
    where = where or f.filename
    missing = [a for a in ("lagsplit_version", "lags") if a not in f.attrs]
    missing += [d for d in ("slow", "fast", "frames/index") if not isinstance(f.get(d), h5py.Dataset)]
    if missing:
        raise NotARunFile(f"{where} is not a lagsplit output file: it lacks {', '.join(missing)}")
    if f["slow"].ndim != 3 or f["fast"].ndim != 3:
        raise NotARunFile(f"{where}: /slow and /fast are not (T, H, W) stacks")


def open_run(path: str | os.PathLike) -> h5py.File:
    """The file open for reading, also while a run still writes it (SWMR); NotARunFile for
    an HDF5 file of another kind, OSError for a file that HDF5 cannot open."""
    f = h5py.File(path, "r", swmr=True)
    try:
        check_run_file(f, path)
    except BaseException:
        f.close()
        raise
    return f


def is_run_file(path: str | os.PathLike) -> bool:
    """True for an HDF5 file that lagsplit wrote; False for anything else (never raises)."""
    try:
        with open_run(path):
            return True
    except (OSError, NotARunFile):
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


def read_scale(f: h5py.File) -> Scale:
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


def acquisition_times(f: h5py.File) -> bool:
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


def read_gaps(f: h5py.File) -> list[dict]:
    """/gaps as a list of {first_index, count, reason}."""
    if "gaps" not in f:
        return []
    g = f["gaps"]
    return [{"first_index": int(a), "count": int(c), "reason": GAP_REASONS[int(r)]}
            for a, c, r in zip(g["first_index"][:], g["count"][:], g["reason"][:])]


def read_rows(f: h5py.File, start: int = 0, stop: int | None = None) -> Rows:
    """Per-row facts of rows ``start`` up to (not including) ``stop``."""
    fr = f["frames"]
    n = len(fr["index"])
    stop = n if stop is None else min(stop, n)
    sl = slice(start, stop)
    t0 = float(fr["timestamp"][0]) if n else float("nan")
    return Rows(start, fr["index"][sl], fr["timestamp"][sl], fr["warmup"][sl].astype(bool),
                fr["latency_ms"][sl], read_gaps(f), t0)


def read_counters_safe(f: h5py.File) -> dict[str, int]:
    """The run's counters by name (processed, dropped, rejected, ...); {} for a file without them."""
    if not isinstance(f.get("counters"), h5py.Dataset) or "names" not in f["counters"].attrs:
        return {}
    return read_counters(f)


def image_names(f: h5py.File) -> list[str]:
    """Which of raw, slow, fast the file holds, in that order."""
    return [n for n in IMAGE_NAMES if isinstance(f.get(n), h5py.Dataset)]


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
