"""Reading recorded stacks: TIFF / OME-TIFF, .npy, and HDF5 datasets (``FILE.h5:/path``).

Stacks are opened lazily where the format allows (memory-mapped .npy, HDF5
datasets, TIFF pages), so a long recording is not read into memory at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class StackError(ValueError):
    """A stack that cannot be used, with the file and the reason."""


class _TiffPages:
    """(T, H, W) view over the pages of a TIFF file, read one page at a time."""

    def __init__(self, tif: Any, series: Any) -> None:
        self.tif = tif
        self.pages = series.pages
        first = self.pages[0]
        self.shape = (len(self.pages), *first.shape)
        self.dtype = first.dtype
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.pages[i].asarray()

    def close(self) -> None:
        self.tif.close()


def split_h5_path(spec: str) -> tuple[str, str | None]:
    """``file.h5:/group/data`` -> (file.h5, /group/data); plain paths give (path, None)."""
    for ext in (".h5:", ".hdf5:", ".hdf:"):
        i = spec.lower().find(ext)
        if i >= 0:
            return spec[: i + len(ext) - 1], spec[i + len(ext):] or None
    return spec, None


def _squeeze_to_stack(arr: Any, where: str) -> Any:
    shape = tuple(arr.shape)
    if len(shape) == 2:
        return np.asarray(arr)[None]
    if len(shape) == 3:
        return arr
    squeezed = tuple(s for s in shape if s != 1)
    if len(squeezed) == 3:
        return np.asarray(arr).reshape(squeezed)
    raise StackError(f"{where}: expected a (T, H, W) stack of 2-D frames, got shape {shape}")


def open_stack(spec: str | Path) -> tuple[Any, str]:
    """Open a stack for frame-by-frame reading; returns (array-like (T, H, W), description).

    Raises StackError naming the file and what is wrong with it.
    """
    path_str, dataset = split_h5_path(str(spec))
    path = Path(path_str)
    if not path.exists():
        raise StackError(f"stack {path} does not exist")
    if path.is_dir():
        raise StackError(f"stack {path} is a folder; give a TIFF, .npy or HDF5 file (use `lagsplit watch` for folders)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
            return _squeeze_to_stack(arr, str(path)), str(path)
        if suffix in (".h5", ".hdf5", ".hdf"):
            import h5py

            f = h5py.File(path, "r")
            if dataset is None:
                names = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim >= 2]
                f.close()
                raise StackError(f"{path}: name the dataset as {path}:/NAME (datasets here: {', '.join(names) or 'none'})")
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                f.close()
                raise StackError(f"{path}: no dataset {dataset}")
            return _squeeze_to_stack(f[dataset], f"{path}:{dataset}"), f"{path}:{dataset}"
        if suffix in (".tif", ".tiff", ".ome.tif", ".ome.tiff") or path.name.lower().endswith((".tif", ".tiff")):
            import tifffile

            tif = tifffile.TiffFile(path)
            series = tif.series[0]
            if len(series.pages) > 1 and series.pages[0] is not None and series.pages[0].ndim == 2:
                pages = _TiffPages(tif, series)
                return pages, str(path)
            arr = series.asarray()
            tif.close()
            return _squeeze_to_stack(arr, str(path)), str(path)
    except StackError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise StackError(f"cannot read stack {path}: {type(exc).__name__}: {exc}") from exc
    raise StackError(f"stack {path}: unsupported format {suffix!r} (TIFF / OME-TIFF, .npy, or FILE.h5:/dataset)")
