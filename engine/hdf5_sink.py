"""The lossless HDF5 sink (docs/design.md §4): one row per frame, SWMR so a second
process can read the file while the run is live, readable up to the last flush
if the process is killed."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .config import OutputConfig
from .contracts import COUNTER_NAMES, RunInfo
from .frame import Decomposition, stored
from .superblock import open_for_write, release

log = logging.getLogger("lagsplit.hdf5")

GAP_REASONS = ("dropped", "rejected", "missing", "not processed")  # /gaps/reason: the position in this tuple
FRAME_COLUMNS = (("index", np.int64), ("timestamp", np.float64), ("model_version", np.int64), ("warmup", np.uint8),
                 ("latency_ms", np.float32), ("flags", np.uint8), ("shed", np.uint8),
                 ("gate", np.float32))  # /frames/<name>, one value per row
RESUME_COLUMNS = (("row", np.int64), ("after_index", np.int64), ("time", np.float64), ("model_version", np.int64))
MIN_FREE_BYTES = 16 * 2**20


class OutputError(RuntimeError):
    """The output file cannot be written (unwritable place, full disk, file in use)."""


class DiskFull(OutputError):
    """The output's disk is about to be full: the run stops while the file can still be
    closed cleanly."""


@dataclass(frozen=True)
class FileState:
    """What an existing output holds, read without changing it (as a SWMR reader, so a file
    whose writer was killed opens too)."""

    path: Path
    rows: int
    """Rows that every per-frame dataset holds, in increasing frame number (what a resumed
    run keeps; a row a killed writer left half-written is not counted)."""
    last_index: int | None
    """Frame number of the last of those rows."""
    last_recorded: int | None
    """The last frame number the file accounts for, in a row or in a gap."""
    shape: tuple[int, int]
    input_dtype: str
    component_dtype: str
    lags: tuple[int, ...]
    config: dict
    datasets: frozenset[str]
    counters: dict[str, int]
    run_id: str
    resumes: int
    open_for_write: bool
    """The superblock says a writer has the file open: one is running, or one was killed."""
    writer: tuple[str, int] | None
    """(host, process id) of the last process that wrote the file."""


@dataclass(frozen=True)
class Resume:
    """How a run continues an existing file: ``after`` is the last frame number it keeps
    (gap records past it are dropped: the run processes or records those frames again);
    ``model_version`` the training steps of the checkpoint the networks continue from
    (-1: none)."""

    state: FileState
    after: int | None
    model_version: int = -1


def per_frame_datasets(f: h5py.File) -> list[str]:
    """Every dataset with one row per processed frame: the images and /frames/*."""
    names = [n for n in ("slow", "fast", "raw") if n in f]
    if "components" in f:
        names += [f"components/{n}" for n in f["components"]]
    return names + [f"frames/{n}" for n in f["frames"]]


def committed_rows(f: h5py.File) -> int:
    """Rows every per-frame dataset holds, no more than /flushed_rows says reached the disk
    whole (rows after it were being written when the writer was killed or a write failed),
    cut before the first frame number that does not increase."""
    n = min(f[name].shape[0] for name in per_frame_datasets(f))
    if "flushed_rows" in f:
        n = min(n, int(f["flushed_rows"][()]))
    idx = f["frames/index"][:n]
    bad = np.flatnonzero(np.diff(idx) <= 0)
    return int(bad[0]) + 1 if bad.size else n


def read_file_state(path: str | os.PathLike) -> FileState:
    """The state of an existing lagsplit output. OSError when HDF5 cannot open it,
    KeyError when it is not a lagsplit output."""
    path = Path(path)
    flagged = open_for_write(path)
    with h5py.File(path, "r", swmr=True) as f:
        rows = committed_rows(f)
        last = int(f["frames/index"][rows - 1]) if rows else None
        recorded = last
        gaps = f["gaps"]
        n = min(gaps[k].shape[0] for k in ("first_index", "count"))
        if n:
            ends = gaps["first_index"][:n] + gaps["count"][:n] - 1
            recorded = int(max(ends.max(), -1 if last is None else last))
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        host, pid = f.attrs.get("writer_host"), f.attrs.get("writer_pid")
        return FileState(
            path=path, rows=rows, last_index=last, last_recorded=recorded,
            shape=tuple(int(x) for x in f.attrs["shape"]), input_dtype=str(f.attrs["input_dtype"]),
            component_dtype=str(f["slow"].dtype), lags=tuple(int(x) for x in f.attrs["lags"]),
            config=json.loads(f.attrs.get("config", "{}")), datasets=frozenset(names), counters=read_counters(f),
            run_id=str(f.attrs.get("run_id", "")), resumes=int(f["resumes/row"].shape[0]) if "resumes" in f else 0,
            open_for_write=flagged, writer=None if host is None or pid is None else (str(host), int(pid)),
        )


def resume_mismatch(st: FileState, out: OutputConfig, *, lags: tuple[int, ...], components: bool,
                    shape: tuple[int, ...] | None = None, dtype: str | None = None) -> str | None:
    """Why a run with these settings cannot continue the file ``st`` describes, naming the
    setting (shape and dtype where known already), or None when it can."""
    if shape is not None and tuple(shape) != st.shape:
        return (f"it holds frames of {st.shape[0]} x {st.shape[1]} px, this run's are "
                f"{shape[0]} x {shape[1]} px (shape)")
    if dtype is not None and np.dtype(dtype) != np.dtype(st.input_dtype):
        return f"it holds frames of dtype {np.dtype(st.input_dtype)}, this run's are {np.dtype(dtype)} (dtype)"
    if tuple(lags) != st.lags:
        return f"it was written with model.lags = {list(st.lags)}, this run uses {list(lags)}"
    for name, want in (("raw", out.raw), ("components", out.components and components)):
        have = any(d == name or d.startswith(name + "/") for d in st.datasets)
        if have != want:
            return f"it was written with output.{name} = {str(have).lower()}, this run uses {str(want).lower()}"
    if st.component_dtype != out.dtype:
        return f"it was written with output.dtype = {st.component_dtype!r}, this run uses {out.dtype!r}"
    return None


def writer_alive(state: FileState) -> bool:
    """True when the process that last wrote the file runs on this machine still."""
    if state.writer is None or state.writer[0] != socket.gethostname():
        return False
    try:
        cmdline = Path(f"/proc/{state.writer[1]}/cmdline").read_bytes()
    except OSError:
        return False
    return state.writer[1] != os.getpid() and b"lagsplit" in cmdline


def _compression(name: str) -> dict:
    if name == "none":
        return {}
    if name in ("lzf", "gzip"):
        return {"compression": name}
    try:
        import hdf5plugin  # noqa: PLC0415  (optional dependency)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OutputError("output.compression = 'blosc-lz4' needs the hdf5plugin package (pip install hdf5plugin)") from exc
    return dict(hdf5plugin.Blosc(cname="lz4"))


def check_place(path: Path, *, overwrite: bool, resume: bool) -> None:
    """OutputError before a run starts when ``path`` cannot be written: its folder cannot be
    made or written in, the output exists while neither ``overwrite`` nor ``resume`` is
    given, an output to resume is not writable, or the disk has less than MIN_FREE_BYTES."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {parent}: {exc.strerror}") from exc
    try:  # a file written and removed: permissions, a read-only mount, /proc (root included)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".lagsplit-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {parent}: {exc.strerror}") from exc
    if resume and not os.access(path, os.W_OK):
        raise OutputError(f"cannot resume {path}: it is not writable")
    if path.exists() and not overwrite and not resume:
        raise OutputError(f"{path} exists and output.overwrite is false")
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        raise OutputError(f"only {free / 2**20:.1f} MiB free at {parent}; need at least {MIN_FREE_BYTES // 2**20} MiB")


class HDF5Sink:
    """Writes every decomposition it is given; nothing is dropped."""

    def __init__(self, path: str | os.PathLike, cfg: OutputConfig | None = None, version: str = "", *,
                 run_id: str | None = None, resume: Resume | None = None) -> None:
        self.path = Path(path)
        self.cfg = cfg or OutputConfig(path=str(path))
        self.version = version
        self.resume = resume
        self.run_id = resume.state.run_id if resume is not None else (run_id or uuid.uuid4().hex)
        self.file: h5py.File | None = None
        self.rows = 0
        self._train_rows = 0
        self._gap_rows = 0
        self._since_flush = 0
        self._last_flush = time.monotonic()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._prior = dict.fromkeys(COUNTER_NAMES, 0)  # what the file counted before a resume
        self._ds: dict[str, h5py.Dataset] = {}  # datasets kept open (see _dataset)
        self._flushed = 0  # rows on disk as of the last flush that succeeded
        self._failed: str | None = None  # why a write failed; nothing is written after it
        self.preflight()

    def preflight(self) -> None:
        """Fail before the run starts if the file cannot be written."""
        check_place(self.path, overwrite=self.cfg.overwrite, resume=self.resume is not None)
        if self.path.is_dir():
            raise OutputError(f"output path {self.path} is a folder, not a file")

    # ---- Sink ---------------------------------------------------------------------------------
    def setup(self, info: RunInfo) -> None:
        if self.resume is not None:
            self._reopen(info, self.resume)
        else:
            self._create(info)

    def _create(self, info: RunInfo) -> None:
        h, w = info.shape
        comp_dtype = np.float16 if self.cfg.dtype == "float16" else np.float32
        kw = dict(chunks=(1, h, w), **_compression(self.cfg.compression))
        try:
            f = h5py.File(self.path, "w", libver="latest")
        except OSError as exc:
            raise OutputError(f"cannot create {self.path}: {exc}") from exc
        self.file = f
        f.create_dataset("slow", (0, h, w), comp_dtype, maxshape=(None, h, w), **kw)
        f.create_dataset("fast", (0, h, w), comp_dtype, maxshape=(None, h, w), **kw)
        if self.cfg.raw:
            f.create_dataset("raw", (0, h, w), np.dtype(info.dtype), maxshape=(None, h, w), **kw)
        if self.cfg.components and info.components:
            g = f.create_group("components")
            for lag in info.lags:
                g.create_dataset(f"lag_{lag}", (0, h, w), comp_dtype, maxshape=(None, h, w), **kw)
            g.create_dataset("residual", (0, h, w), comp_dtype, maxshape=(None, h, w), **kw)
        fr = f.create_group("frames")
        for name, dt in FRAME_COLUMNS:
            fr.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(1024,))
        tr = f.create_group("train")
        tr.create_dataset("step", (0,), np.int64, maxshape=(None,), chunks=(1024,))
        tr.create_dataset("loss", (0, len(info.lags)), np.float32, maxshape=(None, len(info.lags)), chunks=(1024, len(info.lags)))
        gp = f.create_group("gaps")
        gp.attrs.create("reasons", list(GAP_REASONS), dtype=h5py.string_dtype())
        for name, dt in (("first_index", np.int64), ("count", np.int64), ("reason", np.uint8)):
            gp.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(256,))
        cnt = f.create_dataset("counters", (len(COUNTER_NAMES),), np.int64)
        cnt.attrs.create("names", list(COUNTER_NAMES), dtype=h5py.string_dtype())
        f.create_dataset("flushed_rows", data=np.int64(0))
        f.attrs.update({
            "lagsplit_version": self.version,
            "config": info.config_json,
            "lags": np.asarray(info.lags, dtype=np.int64),
            "source": info.source,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "shape": np.asarray(info.shape, dtype=np.int64),
            "input_dtype": info.dtype,
            "run_id": self.run_id,
            **self._writer(),
        })
        for k, v in info.extra.items():  # e.g. pixel_size_um, frame_interval_s, channel_name from the source
            if v is None:
                continue  # what the source does not know is absent, not a placeholder
            if isinstance(v, list | tuple) and v and all(isinstance(x, str) for x in v):
                f.attrs.create(k, list(v), dtype=h5py.string_dtype())
            else:
                f.attrs[k] = v
        f.swmr_mode = True  # everything above exists before SWMR starts
        f.flush()

    @staticmethod
    def _writer() -> dict:
        return {"writer_host": socket.gethostname(), "writer_pid": os.getpid()}

    def _reopen(self, info: RunInfo, resume: Resume) -> None:
        """Continue the existing file: check that this run's frames fit it (else OutputError,
        the file untouched), clear what a killed writer left, cut rows it left half-written
        and gap records past ``resume.after``, record the resume, then append in SWMR mode."""
        st = resume.state
        why = resume_mismatch(st, self.cfg, lags=info.lags, components=info.components, shape=info.shape,
                              dtype=info.dtype)
        if why:
            raise OutputError(f"cannot resume {self.path}: {why}; the file is left as it was")
        for done in release(self.path):  # what a killed or failed writer left
            log.info("%s: %s", self.path, done)
        try:
            f = h5py.File(self.path, "r+", libver="latest")
        except OSError as exc:
            raise OutputError(f"cannot open {self.path} to resume it: {exc}") from exc
        self.file = f
        rows = committed_rows(f)
        for name in per_frame_datasets(f):
            if f[name].shape[0] != rows:
                f[name].resize(rows, axis=0)
        for name, dt in FRAME_COLUMNS:  # a column this version writes and the file lacks: zeros so far (gate: NaN, unknown)
            if name not in f["frames"]:
                f["frames"].create_dataset(name, (rows,), dt, maxshape=(None,), chunks=(1024,),
                                           fillvalue=np.nan if name == "gate" else 0)
        self.rows = rows
        self._train_rows = min(f["train/step"].shape[0], f["train/loss"].shape[0])
        for name in ("train/step", "train/loss"):
            f[name].resize(self._train_rows, axis=0)
        gaps = f["gaps"]
        keep = min(gaps[name].shape[0] for name in ("first_index", "count", "reason"))
        firsts = gaps["first_index"][:keep]
        while keep and resume.after is not None and firsts[keep - 1] > resume.after:
            keep -= 1
        reopened = reopened_counts(gaps["count"][keep:len(firsts)], gaps["reason"][keep:len(firsts)])
        for name in ("first_index", "count", "reason"):
            gaps[name].resize(keep, axis=0)
        self._gap_rows = keep
        gaps.attrs.create("reasons", list(GAP_REASONS), dtype=h5py.string_dtype())  # a superset, same order
        prior = read_counters(f)
        if list(prior) != list(COUNTER_NAMES):  # written by a version that counted other things
            del f["counters"]
            cnt = f.create_dataset("counters", (len(COUNTER_NAMES),), np.int64)
            cnt.attrs.create("names", list(COUNTER_NAMES), dtype=h5py.string_dtype())
        before = {k: prior.get(k, 0) for k in COUNTER_NAMES}
        # the gaps cut above are played again: counted anew by this run, no longer open ones
        self._prior = {k: max(0, before[k] - reopened[k]) for k in COUNTER_NAMES}
        if "flushed_rows" not in f:
            f.create_dataset("flushed_rows", data=np.int64(rows))
        f["flushed_rows"][()] = rows
        self._prior["processed"] = rows  # the rows kept: a killed writer's counters lag its last rows
        rs = f.require_group("resumes")
        for name, dt in RESUME_COLUMNS:
            if name not in rs:
                rs.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(64,))
        n = rs["row"].shape[0]
        for name, value in (("row", rows), ("after_index", -1 if resume.after is None else resume.after),
                            ("time", time.time()), ("model_version", resume.model_version)):
            rs[name].resize(n + 1, axis=0)
            rs[name][n] = value
        _record_counters_before(rs, n, before)
        f.attrs.update(self._writer())
        self._write_counters()
        f.swmr_mode = True
        f.flush()
        self._flushed = rows

    def append(self, r: Decomposition) -> None:
        f = self._open()
        self._check_space(r)
        n = self.rows
        comp = self._component  # converted here, many times faster than HDF5 converts float32 to float16
        rows = [("slow", comp(r.slow)), ("fast", comp(r.fast))]
        if "raw" in f:
            rows.append(("raw", r.raw))
        if "components" in f and r.components is not None:
            rows += [(f"components/lag_{lag}", comp(c)) for lag, c in r.components.items()]
            rows.append(("components/residual", comp(r.residual)))
        rows += [("frames/timestamp", r.timestamp), ("frames/model_version", r.model_version),
                 ("frames/warmup", int(r.warmup)), ("frames/latency_ms", r.latency_ms),
                 ("frames/flags", getattr(r, "flags", 0)), ("frames/shed", getattr(r, "shed", 0)),
                 ("frames/gate", getattr(r, "gate", np.nan)),
                 ("frames/index", r.index)]  # the index last: a row with its index is whole
        self._write_row(n, rows)
        self.rows = n + 1
        self._since_flush += 1
        self._maybe_flush()

    def _component(self, plane: np.ndarray) -> np.ndarray:
        """A component plane in the file's component dtype (``output.dtype``)."""
        return stored(plane, self._dataset("slow").dtype)

    def skip(self, first_index: int, count: int, reason: str) -> None:
        self._open()
        n = self._gap_rows
        self._write_row(n, [("gaps/first_index", first_index), ("gaps/count", count),
                            ("gaps/reason", GAP_REASONS.index(reason))])
        self._gap_rows = n + 1

    def train_log(self, step: int, losses: list[float]) -> None:
        self._open()
        n = self._train_rows
        self._write_row(n, [("train/step", step), ("train/loss", np.asarray(losses, dtype=np.float32))])
        self._train_rows = n + 1

    def update_counters(self, counters: dict[str, int]) -> None:
        """Keep the run's counters; they are written to /counters at each flush and at close."""
        self._counters.update({k: int(v) for k, v in counters.items() if k in self._counters})

    def close(self) -> None:
        """Write the counters, flush and close. After a failed write only the close is tried
        (it writes what HDF5 still holds); an error closing is raised as OutputError, saying
        what the file keeps."""
        if self.file is None:
            return
        f, self.file = self.file, None
        if self._failed is not None:
            # HDF5 cannot close a file whose writes failed (it crashes trying): it is left
            # open, as a killed run leaves it, and held so that it is never released
            _ABANDONED.append((f, self._ds))
            self._ds = {}
            raise OutputError(f"{self.path} was left open after the failed write ({self._failed}); {self.kept()}")
        self._ds = {}
        try:
            self._write_counters(f)
            f.flush()
            f["flushed_rows"][()] = self.rows
            f.close()
            self._flushed = self.rows
        except Exception as exc:  # noqa: BLE001 - HDF5 raises RuntimeError as well as OSError
            self._failed = _why(exc)
            _ABANDONED.append((f, {}))
            raise OutputError(f"closing {self.path} failed ({self._failed}); {self.kept()}") from exc

    def kept(self) -> str:
        """What the file holds for sure: the rows of the last flush that succeeded."""
        return f"it keeps the {self._flushed} frames flushed before" + (
            " the error" if self._failed is not None else "")

    # ---- internals ----------------------------------------------------------------------------
    def _open(self) -> h5py.File:
        if self.file is None:
            raise OutputError(f"{self.path}: setup() was not called or the file is closed")
        if self._failed is not None:
            raise OutputError(f"{self.path}: a write failed before ({self._failed}); {self.kept()}")
        return self.file

    def _write_row(self, n: int, values: list[tuple[str, object]]) -> None:
        """Grow each named dataset to ``n + 1`` rows and write row ``n``, in the order given."""
        with self._writing():
            for name, value in values:
                ds = self._dataset(name)
                ds.resize(n + 1, axis=0)
                ds[n] = value

    def _dataset(self, name: str) -> h5py.Dataset:
        """The open dataset ``name``: kept open, so that HDF5 writes only when flushed (and a
        write that fails, a full disk, is raised there and not lost in a destructor)."""
        ds = self._ds.get(name)
        if ds is None:
            ds = self._ds[name] = self.file[name]  # type: ignore[index]
        return ds

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write: a failure (a full disk, the file gone) is raised once as
        OutputError saying what the file keeps, and every later call refuses to write."""
        try:
            yield
        except OutputError:
            raise
        except Exception as exc:  # noqa: BLE001 - HDF5 raises RuntimeError as well as OSError
            self._failed = _why(exc)
            raise OutputError(f"writing {self.path} failed ({self._failed}); {self.kept()}") from exc

    def _check_space(self, r: Decomposition) -> None:
        """Stop while the disk still has room to close the file cleanly: free space under
        MIN_FREE_BYTES / 2 plus two rows of this size is a DiskFull error."""
        row = r.nbytes
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES // 2 + 2 * row:
            self._counters["sink_errors"] = max(self._counters["sink_errors"], 1)  # the file says so when closed
            raise DiskFull(f"only {free / 2**20:.1f} MiB left on the disk of {self.path}: stopped before it is "
                           f"full; the file keeps the {self.rows} frames written so far")

    def _write_counters(self, f: h5py.File | None = None) -> None:
        """The file's counters: this run's, added to what the file counted before a resume."""
        f = f or self.file
        assert f is not None
        f["counters"][:] = np.asarray([self._prior[k] + self._counters[k] for k in COUNTER_NAMES], dtype=np.int64)

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if self._since_flush >= self.cfg.flush_every or now - self._last_flush >= self.cfg.flush_seconds:
            with self._writing():
                self._write_counters()
                self.file.flush()  # type: ignore[union-attr]
                # only once the rows are on disk does /flushed_rows say so (a second, tiny flush)
                self._dataset("flushed_rows")[()] = self.rows
                self.file.flush()  # type: ignore[union-attr]
            self._flushed = self.rows
            self._since_flush = 0
            self._last_flush = now


_ABANDONED: list = []  # files whose writes failed, held open for the life of the process


def abandoned() -> bool:
    """True once a file whose write failed is held open in this process (see
    ``HDF5Sink.close``): HDF5 may crash when the process exits normally, so the command
    line leaves with ``os._exit``."""
    return bool(_ABANDONED)


def _why(exc: BaseException) -> str:
    """The cause of an HDF5 write error in a few words (its errno text when it has one)."""
    text = str(exc)
    for known in ("No space left on device", "File too large", "Disk quota exceeded", "Read-only file system",
                  "Input/output error", "Stale file handle"):
        if known in text:
            return known
    return text.splitlines()[0] if text else type(exc).__name__


def read_counters(f: h5py.File) -> dict[str, int]:
    """Counters a run recorded, by name (/counters, its names in the ``names`` attribute);
    a resumed file's add up every run that wrote it."""
    ds = f["counters"]
    return {str(name): int(v) for name, v in zip(ds.attrs["names"], ds[()], strict=True)}


# the counter a gap's frames were counted under when a run left them, by gap reason; all of
# them were received ("missing" frames never were)
_GAP_COUNTERS = {"dropped": "dropped", "rejected": "rejected", "not processed": "not_processed"}


def reopened_counts(counts: np.ndarray, reasons: np.ndarray) -> dict[str, int]:
    """What the gap records a resume cuts (``counts`` frames each, ``reasons`` indices into
    GAP_REASONS) added to the file's counters: one ``gaps`` each, and their frames under the
    reason's counter and ``received``. The resumed run plays those frames again and counts
    them anew, so they come off the counters the file carries over."""
    out = dict.fromkeys(COUNTER_NAMES, 0)
    out["gaps"] = len(counts)
    for count, reason in zip(counts.tolist(), reasons.tolist(), strict=True):
        name = _GAP_COUNTERS.get(GAP_REASONS[reason]) if reason < len(GAP_REASONS) else None
        if name is not None:
            out[name] += count
            out["received"] += count
    return out


def _record_counters_before(rs: h5py.Group, n: int, before: dict[str, int]) -> None:
    """Row ``n`` of /resumes/counters: the file's counters when resume ``n`` began, gaps it
    took up again included (-1 in the rows of resumes that did not record them)."""
    if "counters" not in rs:
        ds = rs.create_dataset("counters", (n, len(COUNTER_NAMES)), np.int64, maxshape=(None, len(COUNTER_NAMES)),
                               chunks=(64, len(COUNTER_NAMES)), fillvalue=-1)
        ds.attrs.create("names", list(COUNTER_NAMES), dtype=h5py.string_dtype())
    ds = rs["counters"]
    ds.resize(n + 1, axis=0)
    ds[n] = [before[k] for k in COUNTER_NAMES]
