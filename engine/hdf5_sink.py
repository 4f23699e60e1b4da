"""The lossless HDF5 sink (docs/design.md §4): one row per frame, SWMR so a second
process can read the file while the run is live, readable up to the last flush
if the process is killed."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np

from .config import OutputConfig
from .contracts import COUNTER_NAMES, RunInfo
from .frame import Decomposition

log = logging.getLogger("lagsplit.hdf5")

GAP_REASONS = ("dropped", "rejected", "missing")  # /gaps/reason holds the position in this tuple
MIN_FREE_BYTES = 16 * 2**20


class OutputError(RuntimeError):
    """The output file cannot be written (unwritable place, full disk, file in use)."""


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


class HDF5Sink:
    """Writes every decomposition it is given; nothing is dropped."""

    def __init__(self, path: str | os.PathLike, cfg: OutputConfig | None = None, version: str = "") -> None:
        self.path = Path(path)
        self.cfg = cfg or OutputConfig(path=str(path))
        self.version = version
        self.file: h5py.File | None = None
        self.rows = 0
        self._train_rows = 0
        self._gap_rows = 0
        self._since_flush = 0
        self._last_flush = time.monotonic()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.preflight()

    def preflight(self) -> None:
        """Fail before the run starts if the file cannot be written."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {parent}: {exc.strerror}") from exc
        if not os.access(parent, os.W_OK):
            raise OutputError(f"output folder {parent} is not writable")
        if self.path.exists() and not self.cfg.overwrite:
            raise OutputError(f"{self.path} exists and output.overwrite is false")
        if self.path.is_dir():
            raise OutputError(f"output path {self.path} is a folder, not a file")
        free = shutil.disk_usage(parent).free
        if free < MIN_FREE_BYTES:
            raise OutputError(f"only {free / 2**20:.1f} MiB free at {parent}; need at least {MIN_FREE_BYTES // 2**20} MiB")

    # ---- Sink ---------------------------------------------------------------------------------
    def setup(self, info: RunInfo) -> None:
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
        for name, dt in (("index", np.int64), ("timestamp", np.float64), ("model_version", np.int64),
                         ("warmup", np.uint8), ("latency_ms", np.float32)):
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
        f.attrs.update({
            "lagsplit_version": self.version,
            "config": info.config_json,
            "lags": np.asarray(info.lags, dtype=np.int64),
            "source": info.source,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "shape": np.asarray(info.shape, dtype=np.int64),
            "input_dtype": info.dtype,
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

    def append(self, r: Decomposition) -> None:
        f = self._open()
        n = self.rows
        rows = [("slow", r.slow), ("fast", r.fast)]
        if "raw" in f:
            rows.append(("raw", r.raw))
        if "components" in f and r.components is not None:
            rows += [(f"components/lag_{lag}", c) for lag, c in r.components.items()]
            rows.append(("components/residual", r.residual))
        for name, arr in rows:
            ds = f[name]
            ds.resize(n + 1, axis=0)
            ds[n] = arr
        for name, value in (("index", r.index), ("timestamp", r.timestamp), ("model_version", r.model_version),
                            ("warmup", int(r.warmup)), ("latency_ms", r.latency_ms)):
            ds = f["frames"][name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        self.rows = n + 1
        self._since_flush += 1
        self._maybe_flush()

    def skip(self, first_index: int, count: int, reason: str) -> None:
        f = self._open()
        g = f["gaps"]
        n = self._gap_rows
        for name, value in (("first_index", first_index), ("count", count), ("reason", GAP_REASONS.index(reason))):
            g[name].resize(n + 1, axis=0)
            g[name][n] = value
        self._gap_rows = n + 1

    def train_log(self, step: int, losses: list[float]) -> None:
        f = self._open()
        n = self._train_rows
        f["train/step"].resize(n + 1, axis=0)
        f["train/step"][n] = step
        f["train/loss"].resize(n + 1, axis=0)
        f["train/loss"][n] = np.asarray(losses, dtype=np.float32)
        self._train_rows = n + 1

    def update_counters(self, counters: dict[str, int]) -> None:
        """Keep the run's counters; they are written to /counters at each flush and at close."""
        self._counters.update({k: int(v) for k, v in counters.items() if k in self._counters})

    def close(self) -> None:
        if self.file is None:
            return
        try:
            self._write_counters()
            self.file.flush()
        finally:
            self.file.close()
            self.file = None

    # ---- internals ----------------------------------------------------------------------------
    def _open(self) -> h5py.File:
        if self.file is None:
            raise OutputError(f"{self.path}: setup() was not called or the file is closed")
        return self.file

    def _write_counters(self) -> None:
        assert self.file is not None
        self.file["counters"][:] = np.asarray([self._counters[k] for k in COUNTER_NAMES], dtype=np.int64)

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if self._since_flush >= self.cfg.flush_every or now - self._last_flush >= self.cfg.flush_seconds:
            self._write_counters()
            self.file.flush()  # type: ignore[union-attr]
            self._since_flush = 0
            self._last_flush = now


def read_counters(f: h5py.File) -> dict[str, int]:
    """Counters a run recorded, by name (/counters, its names in the ``names`` attribute)."""
    ds = f["counters"]
    return {str(name): int(v) for name, v in zip(ds.attrs["names"], ds[()], strict=True)}
