"""``lagsplit repair FILE``: make the file a killed run left open for every HDF5 reader.

A run killed while it writes (SIGKILL, a crash, the machine losing power) leaves its file
readable up to the last flush, but marked "open for write": readers that pass
``swmr=True`` open it, every other one (h5py without it, Fiji, HDFView) refuses it. Repair
clears that mark (engine/superblock.py) and cuts the rows the writer left half-written, so
that every per-frame dataset holds the same rows. A file that a run is still writing is
refused: read a live file with ``swmr=True``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from lagsplit.engine.hdf5_sink import FileState, committed_rows, per_frame_datasets, read_file_state, writer_alive
from lagsplit.engine.outputs import is_zarr_path
from lagsplit.engine.superblock import NotHDF5, release


class RepairRefused(ValueError):
    """The file cannot or must not be repaired (phrased for the user)."""


@dataclass(frozen=True)
class Repaired:
    """What ``repair`` did to the file's superblock (``released``: the open-for-write mark
    cleared, the file padded to its recorded length), the rows the file keeps and their
    frame numbers, and the rows cut from each dataset that had more."""

    path: Path
    released: list[str]
    rows: int
    first_index: int | None
    last_index: int | None
    cut: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.released) or bool(self.cut)


def _state(path: Path) -> FileState:
    if not path.exists():
        raise RepairRefused(f"{path} does not exist")
    if is_zarr_path(path):
        raise RepairRefused(f"{path} is an OME-Zarr store: it needs no repair (every reader trusts the rows its "
                            f"flushed_rows counts, and --resume continues it)")
    try:
        return read_file_state(path)
    except NotHDF5 as exc:
        raise RepairRefused(str(exc)) from exc
    except KeyError as exc:
        raise RepairRefused(f"{path} is not a lagsplit output file (it lacks {exc})") from exc
    except OSError as exc:
        raise RepairRefused(f"{path}: HDF5 cannot open it even as a live (SWMR) reader ({exc})") from exc


def repair(path: str | os.PathLike) -> Repaired:
    """Clear the open-for-write mark a killed writer left and cut half-written rows;
    RepairRefused while a run writes the file, or for a file lagsplit did not write."""
    path = Path(path)
    state = _state(path)
    if state.open_for_write and writer_alive(state):
        raise RepairRefused(f"{path} is being written by process {state.writer[1]} (lagsplit): a reader of a live "
                            f"file passes swmr=True; repair it only once no run writes it")
    released = release(path)
    cut: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        rows = committed_rows(f)
        longer = [n for n in per_frame_datasets(f) if f[n].shape[0] != rows]
        uneven = [g for g in (("train/step", "train/loss"), ("gaps/first_index", "gaps/count", "gaps/reason"))
                  if len({f[n].shape[0] for n in g}) > 1]
    if longer or uneven:
        with h5py.File(path, "r+") as f:
            for name in longer:
                cut[name] = f[name].shape[0] - rows
                f[name].resize(rows, axis=0)
            for group in uneven:
                n = min(f[name].shape[0] for name in group)
                for name in group:
                    if f[name].shape[0] != n:
                        cut[name] = f[name].shape[0] - n
                        f[name].resize(n, axis=0)
    with h5py.File(path, "r") as f:
        idx = f["frames/index"]
        first, last = (int(idx[0]), int(idx[-1])) if idx.shape[0] else (None, None)
    return Repaired(path, released, rows, first, last, cut)


__all__ = ["RepairRefused", "Repaired", "repair"]
