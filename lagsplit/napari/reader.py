"""The napari reader of lagsplit runs, HDF5 files and OME-Zarr stores (npe2 command
``lagsplit.read_run``).

A run opens as image layers ``raw`` (grey), ``slow`` (green) and ``fast`` (magenta,
additive over slow), time on the first axis, read lazily from the file (``RunFile`` arrays:
napari reads the frame on screen, never the whole run), contrast from a sample of the
data, and the pixel size and frame interval as the layers' scale where the run recorded
them. A points layer ``frame`` labels each time point with its acquisition frame number,
time, warm-up and the gap before it; every layer's metadata["lagsplit"] holds the same
facts as arrays. Needs no Qt and imports no napari."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from lagsplit.extras import ExtraMissing
from lagsplit.run_file import (
    NotARunFile,
    Rows,
    RunFile,
    Scale,
    contrast_limits,
    image_names,
    is_run_path,
    open_run,
    read_counters_safe,
    read_rows,
    read_scale,
)

COLORMAPS = {"raw": "gray", "slow": "green", "fast": "magenta"}
BLENDING = {"raw": "translucent", "slow": "translucent", "fast": "additive"}

LayerData = tuple[Any, dict, str]


def get_reader(path: str | os.PathLike | list) -> Any:
    """``read_run`` for one lagsplit .h5 / .hdf5 file or .ome.zarr store; None for anything
    else (a foreign HDF5 file or Zarr store, several files, another folder), so that other
    readers get it."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if not is_run_path(path):
        return None
    try:
        f = open_run(path)
    except (OSError, NotARunFile, ExtraMissing):
        return None
    f.close()
    return read_run


def read_run(path: str | os.PathLike | list) -> list[LayerData]:
    """The layers of a run file (see the module docstring)."""
    if isinstance(path, list | tuple):
        (path,) = path
    f = open_run(path)  # stays open while the layers' datasets are referenced
    return run_layers(f)


def run_layers(f: RunFile, rows: int | None = None) -> list[LayerData]:
    """Image layers over the first ``rows`` rows (all of them by default) of an open run
    file, then the ``frame`` label layer."""
    n = min(len(f[name]) for name in [*image_names(f), "frames/index"]) if rows is None else rows
    scale = read_scale(f)
    facts = read_rows(f, 0, n)
    meta = {"lagsplit": run_metadata(f, facts, scale)}
    layers: list[LayerData] = []
    for name in image_names(f):
        ds = f[name]
        data = ds if n == len(ds) else _Rows(ds, n)
        layers.append((data, image_kwargs(name, scale, contrast_limits(ds, n, signed=name == "fast"), meta), "image"))
    layers.append(label_layer(facts, scale, meta))
    return layers


def image_kwargs(name: str, scale: Scale, limits: tuple[float, float], meta: dict) -> dict:
    """add_image keyword arguments of one channel."""
    channel = f" ({scale.channel_name})" if scale.channel_name and name == "raw" else ""
    return {
        "name": name + channel,
        "colormap": COLORMAPS[name],
        "blending": BLENDING[name],
        "contrast_limits": limits,
        "scale": scale.tyx(),
        "units": scale.units(),
        "axis_labels": ("t", "y", "x"),
        "metadata": meta,
    }


def label_layer(facts: Rows, scale: Scale, meta: dict) -> LayerData:
    """A points layer with one invisible point per row at its top-left corner, whose text
    names the row's frame (``Rows.label``); it shows only on its own time point."""
    rows = np.arange(facts.first, facts.first + len(facts.index))
    coords = np.zeros((len(rows), 3))
    coords[:, 0] = rows
    labels = [facts.label(int(r)) for r in rows]
    kwargs = {
        "name": "frame",
        "features": {"label": labels},
        "text": {"string": "{label}", "color": "white", "size": 11, "anchor": "upper_left"},
        "size": 1,
        "face_color": "transparent",
        "border_color": "transparent",
        "scale": scale.tyx(),
        "units": scale.units(),
        "axis_labels": ("t", "y", "x"),
        "metadata": meta,
    }
    return coords, kwargs, "points"


def run_metadata(f: RunFile, facts: Rows, scale: Scale) -> dict:
    """What a layer's metadata["lagsplit"] holds: file, source, scale and the per-row facts."""
    return {
        "path": f.path,
        "source": str(f.attrs.get("source", "")),
        "lags": [int(x) for x in f.attrs["lags"]],
        "pixel_size_um": scale.pixel_size_um,
        "frame_interval_s": scale.frame_interval_s,
        "channel_name": scale.channel_name,
        "frame_index": facts.index,
        "timestamp": facts.timestamp,
        "warmup": facts.warmup,
        "latency_ms": facts.latency_ms,
        "gaps": facts.gaps,
        "counters": read_counters_safe(f),
    }


class _Rows:
    """The first ``n`` rows of a (T, H, W) dataset, read on demand (a file still being
    written has rows past the ones every dataset holds)."""

    def __init__(self, ds, n: int) -> None:
        self.ds, self.shape, self.dtype, self.ndim = ds, (n, *ds.shape[1:]), ds.dtype, 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        return self.ds[key]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.ds[: self.shape[0]], dtype=dtype)
