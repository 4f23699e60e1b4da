"""What a batch processes: the recordings its inputs name (files, folders, globs), each
cut into the plane streams the engine runs one at a time, each with its output name."""
from __future__ import annotations

import glob as globbing
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lagsplit.adapters.stacks import PlanesToPick, StackError, open_stack, split_h5_path

# What `lagsplit replay` reads; a folder's files of other kinds (notes, metadata) are left out.
RECORDING_SUFFIXES = (".tif", ".tiff", ".npy")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


class InputError(ValueError):
    """An input that names no recording (a missing path, a glob that matches nothing, a
    folder without recordings), phrased for the user."""


@dataclass(frozen=True)
class Recording:
    """One recorded stack: ``spec`` as ``replay`` takes it (``FILE.h5:/dataset`` for HDF5),
    ``name`` the output's name relative to the batch's folder, without suffix."""

    spec: str
    name: str


@dataclass(frozen=True)
class Stream:
    """One plane stream of a recording: what one task (or one ``--split`` chunk) plays."""

    recording: Recording
    name: str
    channel: int | None
    z: int | None
    frames: int
    """Frames it plays (every plane of a recording has as many)."""


def _is_recording(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(RECORDING_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", *RECORDING_SUFFIXES, *HDF5_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _found(item: str) -> list[tuple[Path, str | None]]:
    """The (file, HDF5 dataset) pairs one input names; InputError when none."""
    path_str, dataset = split_h5_path(item)
    if dataset is not None:
        if not Path(path_str).is_file():
            raise InputError(f"input {item}: {path_str} does not exist")
        return [(Path(path_str), dataset)]
    path = Path(item)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if _is_recording(p))
        if not files:
            raise InputError(f"input {item}: a folder without recordings (TIFF / OME-TIFF or .npy files, "
                             f"searched in its subfolders too)")
        return [(p, None) for p in files]
    if path.is_file():
        if path.name.lower().endswith(HDF5_SUFFIXES):
            raise InputError(f"input {item}: name the HDF5 dataset to play as {item}:/NAME")
        return [(path, None)]
    if globbing.has_magic(item):
        files = sorted(Path(p) for p in globbing.glob(item, recursive=True) if _is_recording(Path(p)))
        if not files:
            raise InputError(f"input {item}: the pattern matches no recording (TIFF / OME-TIFF or .npy)")
        return [(p, None) for p in files]
    raise InputError(f"input {item} does not exist")


def find_recordings(inputs: list[str]) -> list[Recording]:
    """Every recording the inputs name, each once, in the order given. Names are the paths
    relative to the inputs' deepest common folder (so ``day1/pos1.tif`` and
    ``day2/pos1.tif`` stay apart), without their suffix; an HDF5 dataset adds its path."""
    if not inputs:
        raise InputError("no inputs: give recordings, folders or globs")
    pairs: list[tuple[Path, str | None]] = []
    seen: set[tuple[str, str | None]] = set()
    for item in inputs:
        for path, dataset in _found(item):
            key = (os.path.realpath(path), dataset)
            if key not in seen:
                seen.add(key)
                pairs.append((path.absolute(), dataset))
    folders = [str(p.parent) for p, _ in pairs]
    root = Path(os.path.commonpath(folders))
    out: list[Recording] = []
    for path, dataset in pairs:
        rel = path.parent.relative_to(root) / _stem(path)
        name = rel.as_posix()
        if dataset is not None:
            name += "_" + re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.strip("/"))
        out.append(Recording(f"{path}:{dataset}" if dataset is not None else str(path), name))
    return out


def plane_streams(rec: Recording, channel: int | None = None, z: int | None = None,
                  axes: str | None = None) -> list[Stream]:
    """The plane streams of ``rec``: the channel and z-plane given, or, for a stack with
    several of either and none given, one stream per plane (named ``_c1``, ``_z3``...).
    StackError when the recording cannot be opened."""
    try:
        with open_stack(rec.spec, channel=channel, z=z, axes=axes) as stack:
            return [Stream(rec, rec.name, channel, z, len(stack))]
    except PlanesToPick as exc:
        unpicked = exc.unpicked
    channels = range(unpicked["channel"]) if "channel" in unpicked else [channel]
    zs = range(unpicked["z"]) if "z" in unpicked else [z]
    with open_stack(rec.spec, channel=channels[0], z=zs[0], axes=axes) as stack:
        frames = len(stack)
    return [Stream(rec, rec.name + ("" if "channel" not in unpicked else f"_c{c}")
                   + ("" if "z" not in unpicked else f"_z{k}"), c, k, frames)
            for c in channels for k in zs]


__all__ = ["InputError", "Recording", "Stream", "StackError", "find_recordings", "plane_streams"]
