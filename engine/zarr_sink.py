"""The lossless OME-Zarr sink (docs/design.md §4b): the HDF5 layout as an OME-Zarr store,
NGFF 0.5 on Zarr v3, written with zarr-python and its metadata built by ome-zarr-models.

Every component is an OME-Zarr image (``raw``, ``slow``, ``fast``, ``components/lag_<L>``,
``components/residual``: a group with the NGFF ``multiscales`` metadata and one array ``0``
of axes t, y, x); the per-frame tables, training log, gaps, counters and resumes are plain
arrays at the HDF5 file's paths (``frames/index``, ``gaps/count``, ``counters`` ...), and the
run's attributes are the root group's ``lagsplit`` attribute. A frame's image chunks are
written when it comes; the tables, the counters and then ``flushed_rows`` at each flush,
so a reader (or a killed run) trusts the rows ``flushed_rows`` counts: they are whole.
Zarr writes each metadata document and chunk to a temporary file renamed into place, so a
kill never leaves half a document.

``ZarrRun`` reads a store the same way ``lagsplit.run_file`` reads an HDF5 file."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from ome_zarr_models.v05.axes import Axis
from ome_zarr_models.v05.image import ImageAttrs
from ome_zarr_models.v05.multiscales import Dataset, Multiscale

from .config import OutputConfig
from .contracts import COUNTER_NAMES, RunInfo
from .direct_store import DirectStore
from .frame import Decomposition, stored
from .hdf5_sink import (
    FRAME_COLUMNS,
    GAP_REASONS,
    MIN_FREE_BYTES,
    RESUME_COLUMNS,
    DiskFull,
    FileState,
    OutputError,
    Resume,
    check_place,
    reopened_counts,
    resume_mismatch,
)
from .outputs import store_kind_problem

log = logging.getLogger("lagsplit.zarr")

AXES = ("t", "y", "x")
"""The axes of every image: one plane per frame."""
IMAGE_ARRAY = "0"
"""The one resolution level of each image (NGFF dataset path)."""
TILE = 512
"""Chunks of an image are (1, TILE, TILE) px at most: a large frame is several chunks, which
zarr writes (and compresses) in parallel."""
WRITE_ALL = {"write_empty_chunks": True}
"""Every chunk of a frame is written, without first comparing it with the fill value (a pass
over the frame's bytes that finds a chunk to leave out only in a blank frame)."""
ATTRS = "lagsplit"
"""The root group's attribute that holds the run's attributes (absent: not a lagsplit store)."""
COMPRESSIONS = ("none", "gzip", "blosc-lz4")


def _compressors(name: str):
    if name == "none":
        return None
    if name == "gzip":
        return zarr.codecs.GzipCodec(level=1)
    if name == "blosc-lz4":
        return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    raise OutputError(f"output.compression = {name!r} is an HDF5 filter; an OME-Zarr store takes "
                      f"{', '.join(COMPRESSIONS)}")


def image_attrs(name: str, extra: Mapping[str, Any]) -> dict:
    """The NGFF 0.5 ``ome`` attribute of one image: axes t, y, x, the frame interval
    (seconds) and pixel size (micrometres) as its scale where the source knew them, else 1
    per frame and per pixel without a unit; validated by ome-zarr-models as it is built."""
    interval = extra.get("frame_interval_s")
    pixel = extra.get("pixel_size_um")
    known_t = interval is not None and np.isfinite(interval) and interval > 0
    py, px = (float(pixel[0]), float(pixel[-1])) if pixel is not None else (1.0, 1.0)
    known_yx = pixel is not None
    axes = (Axis(name="t", type="time", unit="second" if known_t else None),
            Axis(name="y", type="space", unit="micrometer" if known_yx else None),
            Axis(name="x", type="space", unit="micrometer" if known_yx else None))
    scale = [float(interval) if known_t else 1.0, py, px]
    ms = Multiscale(axes=axes, datasets=(Dataset.build(path=IMAGE_ARRAY, scale=scale, translation=None),), name=name)
    return ImageAttrs(multiscales=[ms], version="0.5").model_dump(mode="json", exclude_none=True)


def _image_names(lags: tuple[int, ...], raw: bool, components: bool) -> list[str]:
    names = ["slow", "fast"] + (["raw"] if raw else [])
    if components:
        names += [f"components/lag_{lag}" for lag in lags] + ["components/residual"]
    return names


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


class ZarrSink:
    """Writes every decomposition it is given to an OME-Zarr store; nothing is dropped."""

    def __init__(self, path: str | os.PathLike, cfg: OutputConfig | None = None, version: str = "", *,
                 run_id: str | None = None, resume: Resume | None = None) -> None:
        self.path = Path(path)
        self.cfg = cfg or OutputConfig(path=str(path))
        self.version = version
        self.resume = resume
        self.run_id = resume.state.run_id if resume is not None else (run_id or uuid.uuid4().hex)
        self.root: zarr.Group | None = None
        self.rows = 0
        self._images: dict[str, zarr.Array] = {}
        self._arrays: dict[str, zarr.Array] = {}
        self._pending: list[tuple] = []  # per-frame table rows not yet written (written at each flush)
        self._train: list[tuple[int, np.ndarray]] = []
        self._gaps: list[tuple[int, int, int]] = []
        self._train_rows = 0
        self._gap_rows = 0
        self._since_flush = 0
        self._last_flush = time.monotonic()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._prior = dict.fromkeys(COUNTER_NAMES, 0)  # what the store counted before a resume
        self._flushed = 0
        self._failed: str | None = None
        self._attrs: dict = {}
        self.preflight()

    def preflight(self) -> None:
        """Fail before the run starts if the store cannot be written."""
        _compressors(self.cfg.compression)
        check_place(self.path, overwrite=self.cfg.overwrite, resume=self.resume is not None)
        why = store_kind_problem(self.path)
        if why:
            raise OutputError(why)

    # ---- Sink ---------------------------------------------------------------------------------
    def setup(self, info: RunInfo) -> None:
        if self.resume is not None:
            self._reopen(info, self.resume)
        else:
            self._create(info)

    def _create(self, info: RunInfo) -> None:
        h, w = info.shape
        comp_dtype = np.float16 if self.cfg.dtype == "float16" else np.float32
        try:
            if self.path.exists():
                shutil.rmtree(self.path)  # output.overwrite; store_kind_problem let only a Zarr store through
            root = zarr.open_group(self._store(), mode="w", zarr_format=3)
        except OSError as exc:
            raise OutputError(f"cannot create {self.path}: {exc}") from exc
        self.root = root
        extra = {k: _jsonable(v) for k, v in info.extra.items() if v is not None}
        compressors = _compressors(self.cfg.compression)
        chunks = (1, min(h, TILE), min(w, TILE))
        for name in _image_names(info.lags, self.cfg.raw, self.cfg.components and info.components):
            group = root.require_group(name)
            dtype = np.dtype(info.dtype) if name == "raw" else comp_dtype
            self._images[name] = group.create_array(IMAGE_ARRAY, shape=(0, h, w), chunks=chunks, dtype=dtype,
                                                    compressors=compressors, fill_value=0, dimension_names=AXES,
                                                    config=WRITE_ALL)
            group.attrs["ome"] = image_attrs(name.rsplit("/", 1)[-1], extra)
        for name, dt in FRAME_COLUMNS:
            self._table(f"frames/{name}", (0,), dt, np.nan if name == "gate" else 0)
        self._table("train/step", (0,), np.int64)
        self._table("train/loss", (0, len(info.lags)), np.float32, np.nan)
        for name, dt in (("first_index", np.int64), ("count", np.int64), ("reason", np.uint8)):
            self._table(f"gaps/{name}", (0,), dt)
        root["gaps"].attrs["reasons"] = list(GAP_REASONS)
        cnt = root.create_array("counters", shape=(len(COUNTER_NAMES),), dtype=np.int64, fill_value=0)
        cnt.attrs["names"] = list(COUNTER_NAMES)
        self._arrays["counters"] = cnt
        self._arrays["flushed_rows"] = root.create_array("flushed_rows", shape=(), dtype=np.int64, fill_value=0)
        self._attrs = {
            "lagsplit_version": self.version,
            "config": json.loads(info.config_json) if info.config_json else {},
            "lags": list(info.lags),
            "source": info.source,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "shape": list(info.shape),
            "input_dtype": info.dtype,
            "run_id": self.run_id,
            **extra,
        }
        self._write_attrs(open_for_write=True)  # last: a store with these attributes is whole

    def _store(self) -> DirectStore | Path:
        """Where the store is written: image chunks past the page cache with ``output.direct_io``."""
        return DirectStore(self.path) if self.cfg.direct_io else self.path

    def _table(self, name: str, shape: tuple[int, ...], dtype, fill=0) -> zarr.Array:
        chunks = (1024, *shape[1:])
        arr = self.root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)  # type: ignore[union-attr]
        self._arrays[name] = arr
        return arr

    def _write_attrs(self, *, open_for_write: bool) -> None:
        self.root.attrs[ATTRS] = {**self._attrs, "writer_host": socket.gethostname(),  # type: ignore[union-attr]
                                  "writer_pid": os.getpid(), "open_for_write": open_for_write}

    def _reopen(self, info: RunInfo, resume: Resume) -> None:
        """Continue the store: check that this run's frames fit it (else OutputError, the store
        untouched), cut rows past its last whole flush and gap records past ``resume.after``,
        record the resume, then append."""
        st = resume.state
        why = resume_mismatch(st, self.cfg, lags=info.lags, components=info.components, shape=info.shape,
                              dtype=info.dtype)
        if why:
            raise OutputError(f"cannot resume {self.path}: {why}; the store is left as it was")
        try:
            root = zarr.open_group(self._store(), mode="r+", zarr_format=3)
        except OSError as exc:
            raise OutputError(f"cannot open {self.path} to resume it: {exc}") from exc
        self.root = root
        self._attrs = {k: v for k, v in dict(root.attrs[ATTRS]).items()
                       if k not in ("writer_host", "writer_pid", "open_for_write")}
        run = ZarrRun(self.path, root)
        rows = run.whole_rows()
        for name in run.image_names():
            arr = self._images[name] = root[f"{name}/{IMAGE_ARRAY}"].with_config(WRITE_ALL)  # type: ignore[union-attr]
            arr.resize((rows, *arr.shape[1:]))
        for name, dt in FRAME_COLUMNS:
            key = f"frames/{name}"
            if key in root:
                self._arrays[key] = root[key]  # type: ignore[assignment]
                self._arrays[key].resize((rows,))
            else:  # a column this version writes and the store lacks: its fill so far (gate: NaN, unknown)
                self._table(key, (rows,), dt, np.nan if name == "gate" else 0)
        self.rows = self._flushed = rows
        self._train_rows = min(root["train/step"].shape[0], root["train/loss"].shape[0])
        for name in ("train/step", "train/loss"):
            arr = self._arrays[name] = root[name]  # type: ignore[assignment]
            arr.resize((self._train_rows, *arr.shape[1:]))
        gap = {k: root[f"gaps/{k}"] for k in ("first_index", "count", "reason")}
        total = min(a.shape[0] for a in gap.values())
        firsts = gap["first_index"][:total]
        keep = total
        while keep and resume.after is not None and firsts[keep - 1] > resume.after:
            keep -= 1
        reopened = reopened_counts(gap["count"][keep:total], gap["reason"][keep:total])
        for k, arr in gap.items():
            self._arrays[f"gaps/{k}"] = arr  # type: ignore[assignment]
            arr.resize((keep,))
        self._gap_rows = keep
        self._arrays["counters"] = root["counters"]  # type: ignore[assignment]
        self._arrays["flushed_rows"] = root["flushed_rows"]  # type: ignore[assignment]
        before = {k: st.counters.get(k, 0) for k in COUNTER_NAMES}
        # the gaps cut above are played again: counted anew by this run, no longer open ones
        self._prior = {k: max(0, before[k] - reopened[k]) for k in COUNTER_NAMES}
        self._prior["processed"] = rows  # the rows kept: a killed writer's counters lag its last rows
        n = st.resumes
        for name, dt in RESUME_COLUMNS:
            key = f"resumes/{name}"
            arr = root[key] if key in root else root.create_array(key, shape=(0,), chunks=(64,), dtype=dt,
                                                                  fill_value=0)
            arr.resize((n + 1,))
            arr[n] = {"row": rows, "after_index": -1 if resume.after is None else resume.after,
                      "time": time.time(), "model_version": resume.model_version}[name]
        if "resumes/counters" not in root:
            hist = root.create_array("resumes/counters", shape=(0, len(COUNTER_NAMES)), chunks=(64, len(COUNTER_NAMES)),
                                     dtype=np.int64, fill_value=-1)
            hist.attrs["names"] = list(COUNTER_NAMES)
        hist = root["resumes/counters"]
        hist.resize((n + 1, len(COUNTER_NAMES)))
        hist[n] = [before[k] for k in COUNTER_NAMES]
        self._write_counters()
        self._arrays["flushed_rows"][()] = rows
        self._write_attrs(open_for_write=True)

    def append(self, r: Decomposition) -> None:
        self._open()
        self._check_space(r)
        n = self.rows
        planes = {"slow": r.slow, "fast": r.fast, "raw": r.raw}
        if r.components is not None:
            planes.update({f"components/lag_{lag}": c for lag, c in r.components.items()})
            planes["components/residual"] = r.residual
        with self._writing():
            for name, arr in self._images.items():
                arr.resize((n + 1, *arr.shape[1:]))
                arr[n] = stored(planes[name], arr.dtype)  # float16 converted faster than zarr converts it
        self._pending.append((r.index, r.timestamp, r.model_version, int(r.warmup), r.latency_ms,
                              getattr(r, "flags", 0), getattr(r, "shed", 0), getattr(r, "gate", np.nan)))
        self.rows = n + 1
        self._since_flush += 1
        self._maybe_flush()

    def skip(self, first_index: int, count: int, reason: str) -> None:
        self._open()
        self._gaps.append((first_index, count, GAP_REASONS.index(reason)))

    def train_log(self, step: int, losses: list[float]) -> None:
        self._open()
        self._train.append((step, np.asarray(losses, dtype=np.float32)))

    def update_counters(self, counters: dict[str, int]) -> None:
        """Keep the run's counters; they are written at each flush and at close."""
        self._counters.update({k: int(v) for k, v in counters.items() if k in self._counters})

    def close(self) -> None:
        """Write what is held, the counters and the row count, and mark the store closed. After
        a failed write nothing more is written: the store keeps the rows of its last flush."""
        if self.root is None:
            return
        try:
            if self._failed is None:
                self.flush()
                with self._writing():
                    self._write_attrs(open_for_write=False)
        finally:
            self.root = None
            self._images, self._arrays = {}, {}
        if self._failed is not None:
            raise OutputError(f"{self.path}: a write failed ({self._failed}); {self.kept()}")

    def kept(self) -> str:
        """What the store holds for sure: the rows of the last flush that succeeded."""
        return f"it keeps the {self._flushed} frames flushed before" + (
            " the error" if self._failed is not None else "")

    def flush(self) -> None:
        """Write the table rows, training steps and gaps held, the counters, then the row
        count (``flushed_rows``): a reader trusts the rows it counts."""
        with self._writing():
            rows, first = self.rows, self._flushed
            if self._pending:
                cols = list(zip(*self._pending, strict=True))
                order = [i for i, (name, _) in enumerate(FRAME_COLUMNS) if name != "index"] + [0]  # the index last
                for i in order:
                    name, dt = FRAME_COLUMNS[i]
                    arr = self._arrays[f"frames/{name}"]
                    arr.resize((rows,))
                    arr[first:rows] = np.asarray(cols[i], dtype=dt)
            if self._train:
                n = self._train_rows + len(self._train)
                for name, values in (("train/step", np.asarray([s for s, _ in self._train], np.int64)),
                                     ("train/loss", np.stack([loss for _, loss in self._train]))):
                    arr = self._arrays[name]
                    arr.resize((n, *arr.shape[1:]))
                    arr[self._train_rows:n] = values
                self._train_rows, self._train = n, []
            if self._gaps:
                n = self._gap_rows + len(self._gaps)
                for j, name in enumerate(("first_index", "count", "reason")):
                    arr = self._arrays[f"gaps/{name}"]
                    arr.resize((n,))
                    arr[self._gap_rows:n] = [g[j] for g in self._gaps]
                self._gap_rows, self._gaps = n, []
            self._write_counters()
            self._arrays["flushed_rows"][()] = rows  # only once every row before it is whole
        self._pending = []
        self._flushed = rows
        self._since_flush = 0
        self._last_flush = time.monotonic()

    # ---- internals ----------------------------------------------------------------------------
    def _open(self) -> zarr.Group:
        if self.root is None:
            raise OutputError(f"{self.path}: setup() was not called or the store is closed")
        if self._failed is not None:
            raise OutputError(f"{self.path}: a write failed before ({self._failed}); {self.kept()}")
        return self.root

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write: a failure (a full disk, the store gone) is raised once as
        OutputError saying what the store keeps, and every later call refuses to write."""
        try:
            yield
        except OutputError:
            raise
        except Exception as exc:  # noqa: BLE001 - zarr and the file system raise several kinds
            self._failed = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise OutputError(f"writing {self.path} failed ({self._failed}); {self.kept()}") from exc

    def _check_space(self, r: Decomposition) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES // 2 + 2 * r.nbytes:
            self._counters["sink_errors"] = max(self._counters["sink_errors"], 1)
            raise DiskFull(f"only {free / 2**20:.1f} MiB left on the disk of {self.path}: stopped before it is "
                           f"full; the store keeps the {self.rows} frames written so far")

    def _write_counters(self) -> None:
        self._arrays["counters"][:] = np.asarray([self._prior[k] + self._counters[k] for k in COUNTER_NAMES],
                                                 dtype=np.int64)

    def _maybe_flush(self) -> None:
        if self._since_flush >= self.cfg.flush_every or time.monotonic() - self._last_flush >= self.cfg.flush_seconds:
            self.flush()


class ZarrRun:
    """A lagsplit OME-Zarr store open for reading (also while a run writes it): the same names
    as the HDF5 file (``slow``, ``components/lag_4``, ``frames/index``, ``gaps/count``,
    ``counters`` ...), each an array with ``shape``, ``dtype``, ``len`` and numpy indexing.
    The interface is ``lagsplit.run_file.RunFile``'s."""

    def __init__(self, path: str | os.PathLike, root: zarr.Group | None = None) -> None:
        self.path = str(path)
        if root is None:
            p = Path(path)
            if p.exists() and not p.is_dir():
                raise NotAStore(f"{path} is a file, not an OME-Zarr store (a folder)")
            root = zarr.open_group(p, mode="r", zarr_format=3)  # OSError when there is no Zarr group
        self._root = root
        self._cache: dict[str, _Array] = {}
        self.attrs: dict = dict(root.attrs.get(ATTRS, {}))

    # names -------------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        if name in ("raw", "slow", "fast") or name.startswith("components/"):
            return f"{name}/{IMAGE_ARRAY}"
        return name

    def __contains__(self, name: str) -> bool:
        if name == "components" or name in ("frames", "gaps", "train", "resumes"):
            return name in self._root
        key = self._key(name)
        return key in self._root and isinstance(self._root[key], zarr.Array)

    def __getitem__(self, name: str) -> _Array:
        arr = self._cache.get(name)
        if arr is None:
            if name not in self:
                raise KeyError(f"{self.path} has no {name}")
            arr = self._cache[name] = _Array(self._root[self._key(name)])  # type: ignore[arg-type]
        return arr

    def image_names(self) -> list[str]:
        """Every image the store holds (raw, slow, fast, components/...)."""
        names = [n for n in ("slow", "fast", "raw") if n in self]
        if "components" in self._root:
            names += [f"components/{k}" for k, _ in sorted(self._root["components"].groups())]  # type: ignore[union-attr]
        return names

    def arrays(self) -> list[str]:
        """Every array, by its HDF5 name."""
        out = []
        for key, node in self._root.members(max_depth=None):
            if isinstance(node, zarr.Array):
                out.append(key[: -len(IMAGE_ARRAY) - 1] if key.endswith("/" + IMAGE_ARRAY) else key)
        return sorted(out)

    @property
    def config(self) -> dict:
        cfg = self.attrs.get("config", {})
        return json.loads(cfg) if isinstance(cfg, str) else dict(cfg)

    @property
    def open_for_write(self) -> bool:
        """The store says a writer has it open: one is running, or one was killed."""
        return bool(self.attrs.get("open_for_write", False))

    def whole_rows(self) -> int:
        """Rows every per-frame array holds, no more than ``flushed_rows`` counts, cut before
        the first frame number that does not increase."""
        per_frame = self.image_names() + [f"frames/{k}" for k, _ in FRAME_COLUMNS if f"frames/{k}" in self]
        n = min(len(self[k]) for k in per_frame)
        if "flushed_rows" in self:
            n = min(n, int(self["flushed_rows"][()]))
        idx = self["frames/index"][:n]
        bad = np.flatnonzero(np.diff(idx) <= 0)
        return int(bad[0]) + 1 if bad.size else n

    def counters(self) -> dict[str, int]:
        if "counters" not in self:
            return {}
        ds = self["counters"]
        return {str(k): int(v) for k, v in zip(ds.attrs.get("names", []), ds[:], strict=False)}

    def axes(self, name: str = "slow") -> tuple[str, ...]:
        """The axis names an image's NGFF metadata gives."""
        ome = self._root[name].attrs.get("ome", {})
        try:
            return tuple(a["name"] for a in ome["multiscales"][0]["axes"])
        except (KeyError, IndexError, TypeError):
            return ()

    def refresh(self) -> None:
        """See what the writer has written since: arrays and attributes are read again."""
        self._root = zarr.open_group(self.path, mode="r", zarr_format=3)
        self.attrs = dict(self._root.attrs.get(ATTRS, {}))
        self._cache = {}

    def close(self) -> None:
        self._cache = {}

    def __enter__(self) -> ZarrRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NotAStore(OSError):
    """An .ome.zarr path that is a file."""


class _Array:
    """A zarr array as the readers use an h5py dataset: ``len`` is its first axis."""

    def __init__(self, arr: zarr.Array) -> None:
        self._arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype
        self.ndim = arr.ndim
        self.attrs = arr.attrs

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, key):
        return self._arr[key]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._arr[...], dtype=dtype)


def read_store_state(path: str | os.PathLike) -> FileState:
    """The state of an existing lagsplit store, read without changing it. OSError when Zarr
    cannot open it, KeyError when it is not a lagsplit store, ValueError when its images do
    not have lagsplit's axes (t, y, x)."""
    run = ZarrRun(path)
    if "lags" not in run.attrs or "slow" not in run or "frames/index" not in run:
        raise KeyError("it has no lagsplit attributes, slow image or frames/index (written by another program?)")
    axes = run.axes("slow")
    if axes != AXES or run["slow"].ndim != len(AXES):
        raise ValueError(f"its images have axes ({', '.join(axes) or 'none given'}) and "
                         f"{run['slow'].ndim} dimensions; lagsplit writes ({', '.join(AXES)})")
    rows = run.whole_rows()
    last = int(run["frames/index"][rows - 1]) if rows else None
    recorded = last
    n = min(len(run[f"gaps/{k}"]) for k in ("first_index", "count"))
    if n:
        ends = run["gaps/first_index"][:n] + run["gaps/count"][:n] - 1
        recorded = int(max(ends.max(), -1 if last is None else last))
    host, pid = run.attrs.get("writer_host"), run.attrs.get("writer_pid")
    return FileState(
        path=Path(path), rows=rows, last_index=last, last_recorded=recorded,
        shape=tuple(int(x) for x in run["slow"].shape[1:]), input_dtype=str(run.attrs["input_dtype"]),
        component_dtype=str(run["slow"].dtype), lags=tuple(int(x) for x in run.attrs["lags"]),
        config=run.config, datasets=frozenset(run.arrays()), counters=run.counters(),
        run_id=str(run.attrs.get("run_id", "")), resumes=len(run["resumes/row"]) if "resumes/row" in run else 0,
        open_for_write=run.open_for_write, writer=None if host is None or pid is None else (str(host), int(pid)),
    )


__all__ = ["NotAStore", "ZarrRun", "ZarrSink", "image_attrs", "read_store_state"]
