"""Which format an output path names, and the sink and state reader of each: ``.h5`` /
``.hdf5`` an HDF5 file (engine/hdf5_sink.py), ``.ome.zarr`` an OME-Zarr store
(engine/zarr_sink.py, which needs the optional zarr packages and is imported only for one)."""
from __future__ import annotations

import os
from pathlib import Path

from .config import OutputConfig
from .contracts import Sink
from .hdf5_sink import FileState, HDF5Sink, OutputError, Resume, read_file_state

HDF5_SUFFIXES = (".h5", ".hdf5")
ZARR_SUFFIX = ".ome.zarr"


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a name that ends in .ome.zarr (an OME-Zarr store)."""
    return os.fspath(path).rstrip("/").lower().endswith(ZARR_SUFFIX)


def is_output_path(path: str | os.PathLike) -> bool:
    """True for a name lagsplit writes: .h5, .hdf5 or .ome.zarr."""
    return is_zarr_path(path) or Path(path).suffix.lower() in HDF5_SUFFIXES


def store_kind_problem(path: str | os.PathLike) -> str | None:
    """Why an .ome.zarr ``path`` cannot be written even with ``output.overwrite``: it exists as a
    file, or as a folder that holds something but no Zarr root (lagsplit never writes into or
    removes such a folder); None when it is free or a Zarr store."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"output {path} is a file, not an OME-Zarr store (a folder): choose another --out"
    if path.is_dir() and not (path / "zarr.json").is_file() and any(path.iterdir()):
        return (f"output {path} is a folder that is not a Zarr store: lagsplit does not write into it or replace it; "
                f"choose another --out")
    return None


def read_output_state(path: str | os.PathLike) -> FileState:
    """The state of an existing output of either format, read without changing it. OSError
    when it cannot be opened, KeyError when lagsplit did not write it, ValueError when its
    layout is not lagsplit's (an OME-Zarr store of other axes)."""
    if is_zarr_path(path):
        from .zarr_sink import read_store_state  # noqa: PLC0415 - needs the optional zarr packages

        return read_store_state(path)
    return read_file_state(path)


def make_sink(path: str | os.PathLike, cfg: OutputConfig, version: str, *, run_id: str | None,
              resume: Resume | None) -> Sink:
    """The sink that writes ``path``: an OME-Zarr store for .ome.zarr, else an HDF5 file."""
    if is_zarr_path(path):
        from .zarr_sink import ZarrSink  # noqa: PLC0415 - needs the optional zarr packages

        return ZarrSink(path, cfg, version=version, run_id=run_id, resume=resume)
    return HDF5Sink(path, cfg, version=version, run_id=run_id, resume=resume)


__all__ = ["HDF5_SUFFIXES", "ZARR_SUFFIX", "OutputError", "is_output_path", "is_zarr_path", "make_sink",
           "read_output_state", "store_kind_problem"]
