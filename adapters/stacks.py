"""Reading recorded stacks: TIFF / OME-TIFF, .npy, and HDF5 datasets (``FILE.h5:/path``).

``open_stack`` is the one way to open a stack; it returns a ``Stack``, a context
manager that reads one (H, W) frame at a time (memory-mapped .npy, HDF5 datasets,
TIFF pages or planes, adapters/tiff_planes.py), so a long recording is not read into
memory at once (only a TIFF whose planes are neither a page each nor one contiguous block
is read whole). A TIFF cut short or with a corrupt page opens with the frames it declares;
each frame it cannot give raises FrameUnreadable when read.

Axes. A frame is one (Y, X) plane at one time point. A TIFF's axes come from its
ImageJ or OME metadata (tifffile's ``series.axes``); a stack with channels (C, or
colour samples S) or z-planes (Z) is refused unless ``channel`` / ``z`` picks one
plane, so channels or z-planes are never played as if they were time points.
A stack whose only stacked axis is Z or C (no T) is refused too: ImageJ saves a
plain time-lapse as z-slices, so the user says which it is. An array without axis
metadata (.npy, an HDF5 dataset, a TIFF without ImageJ or OME metadata) is (Y, X)
or (T, Y, X); with more dimensions, those of size 1 dropped, (T, C, Y, X) when
``channel`` is given, (T, Z, Y, X) when ``z`` is given, or (T, Z, C, Y, X).
``axes`` (e.g. "TYX" for an ImageJ time-lapse saved as slices) replaces what the
file says.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tiff_planes import PlaneUnreadable, tiff_planes


class StackError(ValueError):
    """A stack that cannot be used, with the file and the reason."""


class FrameUnreadable(StackError):
    """One frame a damaged stack cannot give (the rest can be read). ``cause`` says why, in
    the same words for every frame lost the same way (e.g. "file truncated at byte 395,850")."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class PlanesToPick(StackError):
    """A stack with several channels or z-planes opened without picking one: ``unpicked``
    says how many there are of each that was not picked (keys ``"channel"``, ``"z"``), so
    a caller that plays every plane (``lagsplit batch``) knows which to ask for."""

    def __init__(self, message: str, unpicked: dict[str, int]) -> None:
        super().__init__(message)
        self.unpicked = dict(unpicked)


_AXIS_LETTERS = "TZCSYX"
_NAMES = {"T": "time points", "Z": "z-planes", "C": "channels", "S": "colour samples"}


def split_h5_path(spec: str) -> tuple[str, str | None]:
    """``file.h5:/group/data`` -> (file.h5, /group/data); plain paths give (path, None)."""
    for ext in (".h5:", ".hdf5:", ".hdf:"):
        i = spec.lower().find(ext)
        if i >= 0:
            return spec[: i + len(ext) - 1], spec[i + len(ext):] or None
    return spec, None


def check_axes(axes: str) -> str:
    """``axes`` as given by a user (letters T, Z, C, S, Y, X, each at most once, Y and X
    present), upper-cased; ValueError saying what is wrong."""
    up = axes.strip().upper()
    bad = sorted(set(up) - set(_AXIS_LETTERS))
    if bad:
        raise ValueError(f"axes {axes!r}: unknown letter(s) {', '.join(bad)} (use T, Z, C, S, Y, X)")
    if len(set(up)) != len(up):
        raise ValueError(f"axes {axes!r}: a letter appears twice")
    if "Y" not in up or "X" not in up:
        raise ValueError(f"axes {axes!r}: Y and X (the plane) are required")
    return up


@dataclass(frozen=True)
class _Plan:
    """How a stored array of ``shape`` becomes frames: the dimension that is time (None:
    a single frame), a fixed index for every other dimension that is not Y or X, and
    whether the plane is stored (X, Y)."""

    time: int | None
    fixed: dict[int, int]
    transpose: bool
    frames: int
    picked: str  # e.g. "channel 1", "" when nothing was picked

    def index(self, i: int, ndim: int) -> tuple:
        idx: list[Any] = [slice(None)] * ndim
        for d, k in self.fixed.items():
            idx[d] = k
        if self.time is not None:
            idx[self.time] = i
        return tuple(idx)


def _metadata_free_axes(shape: tuple[int, ...], channel: int | None, z: int | None, where: str) -> str:
    """Letters for an array that carries no axes: see the module docstring."""
    kept = list(range(len(shape)))
    if len(shape) > 3:  # (T, 1, H, W), (T, H, W, 1): size-1 dimensions carry nothing
        kept = [i for i, s in enumerate(shape) if s != 1]
        if len(kept) < 3:
            kept = sorted(set(kept) | {len(shape) - 2, len(shape) - 1})
    n = len(kept)
    if n == 2:
        letters = "YX"
    elif n == 3:
        letters = "TYX"
    elif n == 4 and (channel is None) != (z is None):
        letters = "TCYX" if channel is not None else "TZYX"
    elif n == 5:
        letters = "TZCYX"
    else:
        hint = ""
        if n == 4:
            hint = (": its dimension after time holds channels or z-planes; --channel N reads it as "
                    "(T, C, Y, X), --z N as (T, Z, Y, X), and plays plane N")
        raise StackError(f"{where}: expected a (T, H, W) stack of 2-D frames, got shape {shape}{hint}")
    out = ["?"] * len(shape)
    for d, letter in zip(kept, letters, strict=True):
        out[d] = letter
    return "".join("Q" if c == "?" else c for c in out)  # the dropped size-1 dimensions


def _plan(axes: str, shape: tuple[int, ...], channel: int | None, z: int | None, where: str) -> _Plan:
    """Which dimension is time and which plane is read, or StackError naming the axes and
    the option that picks one plane."""
    described = f"{where}: axes {axes}, shape {shape}"
    if "Y" not in axes or "X" not in axes:
        raise StackError(f"{described}: no Y and X plane; give the stack's axes with --axes (e.g. TYX)")
    if len(set(axes)) != len(axes):
        raise StackError(f"{described}: an axis appears twice; give the stack's axes with --axes (e.g. TCYX)")
    outer = [d for d, a in enumerate(axes) if a not in "YX"]
    size = {axes[d]: shape[d] for d in outer}
    if size.get("C", 1) > 1 and size.get("S", 1) > 1:
        raise StackError(f"{described}: both channels and colour samples; give the stack's axes with --axes")
    unknown = [d for d in outer if axes[d] not in "TZCS" and shape[d] > 1]
    time = next((d for d in outer if axes[d] == "T"), None)
    if time is None and len(unknown) == 1:
        time, unknown = unknown[0], []  # ImageJ "images", a plain multi-page TIFF: the pages are time points
    if unknown:
        names = ", ".join(f"{axes[d]} ({shape[d]})" for d in unknown)
        raise StackError(f"{described}: do not know what {names} is; give the stack's axes with --axes (e.g. TCYX)")

    fixed: dict[int, int] = {}
    missing: list[str] = []
    unpicked: dict[str, int] = {}
    picked: list[str] = []
    plane_dims = (("C", "--channel", channel, next((d for d in outer if axes[d] in "CS" and shape[d] > 1), None)),
                  ("Z", "--z", z, next((d for d in outer if axes[d] == "Z" and shape[d] > 1), None)))
    for letter, option, value, dim in plane_dims:
        n = 1 if dim is None else shape[dim]
        what = _NAMES[letter if dim is None else axes[dim]]
        if value is None:
            if n > 1:
                missing.append(f"{n} {what} (pick one with {option} N, 0..{n - 1})")
                unpicked["channel" if letter == "C" else "z"] = n
        elif dim is None and value != 0:
            raise StackError(f"{described}: {option} {value}, but the stack has a single "
                             f"{'channel' if letter == 'C' else 'z-plane'} ({option} 0)")
        elif not 0 <= value < n:
            raise StackError(f"{described}: {option} {value} is out of range: the stack has {n} {what} (0..{n - 1})")
        elif dim is not None:
            fixed[dim] = value
            picked.append(f"{option.lstrip('-')} {value}")
    if missing:
        raise PlanesToPick(f"{described}: it holds " + " and ".join(missing) + "; lagsplit plays one plane over time",
                           unpicked)
    for d in outer:
        if d != time and d not in fixed:
            fixed[d] = 0  # size 1
    frames = 1 if time is None else shape[time]
    transpose = axes.index("X") < axes.index("Y")
    return _Plan(time, fixed, transpose, frames, ", ".join(picked))


def _refuse_planes_without_time(axes: str, shape: tuple[int, ...], where: str, given: str | None,
                                channel: int | None, z: int | None) -> None:
    """A stack whose only stacked axis is Z or C has no time axis: its planes are not time
    points unless the user says so (ImageJ saves a plain stack as z-slices)."""
    if given is not None or "T" in axes:
        return
    outer = [d for d, a in enumerate(axes) if a not in "YX" and shape[d] > 1]
    if len(outer) == 1 and axes[outer[0]] in "ZCS":
        d = outer[0]
        option, value = ("--z", z) if axes[d] == "Z" else ("--channel", channel)
        if value is not None:
            return
        raise StackError(
            f"{where}: axes {axes}, shape {shape}: {shape[d]} {_NAMES[axes[d]]} and no time axis; "
            f"{option} N plays plane N as a single frame, and if the planes are time points "
            f"(e.g. an ImageJ stack saved as slices) --axes {axes.replace(axes[d], 'T')} reads them as time")


class Stack:
    """A recorded stack open for reading: ``len(stack)`` frames of ``stack.shape[1:]``
    (H, W) pixels, ``stack[i]`` reads frame ``i`` as an ndarray. Use it as a context
    manager (or call ``close()``); ``description`` names the file and the plane read.
    Reading a frame a damaged file cannot give raises FrameUnreadable; ``damage`` says how
    the file is damaged where that is known when it is opened (None: it looks whole)."""

    ndim = 3

    def __init__(self, description: str, frames: int, frame_shape: tuple[int, int], dtype: np.dtype,
                 read: Callable[[int], np.ndarray], close: Callable[[], None], axes: str,
                 damage: str | None = None) -> None:
        self.description = description
        self.shape = (frames, *frame_shape)
        self.dtype = np.dtype(dtype)
        self.axes = axes
        self.damage = damage
        self._read = read
        self._close: Callable[[], None] | None = close

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        if isinstance(i, slice) or not -len(self) <= int(i) < len(self):
            raise IndexError(f"frame {i} of a {len(self)}-frame stack")
        if self._close is None:
            raise StackError(f"{self.description} is closed")
        return self._read(int(i) % len(self))

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start`` .. ``stop - 1`` as one (T, H, W) array (in memory)."""
        stop = len(self) if stop is None else min(stop, len(self))
        out = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
        for k, i in enumerate(range(start, stop)):
            out[k] = self[i]
        return out

    def frame_range(self, start: int = 0, stop: int | None = None, names: tuple[str, str] = ("start", "stop")) -> range:
        """The frames from ``start`` up to (not including) ``stop`` (None: the end); a ``stop``
        past the end plays to the end. StackError, naming ``names``, when none would play."""
        n = len(self)
        if start >= n:
            raise StackError(f"{self.description}: {names[0]} = {start} is beyond the stack's end: "
                             f"it has {n} frame(s), 0..{n - 1}")
        if stop is not None and stop <= start:
            raise StackError(f"{self.description}: {names[1]} = {stop} must be after {names[0]} = {start}")
        return range(start, n if stop is None else min(stop, n))

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a stack dropped without close() still lets go of its file
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def _array_stack(arr: Any, where: str, axes: str | None, channel: int | None, z: int | None,
                 close: Callable[[], None], copy: bool) -> Stack:
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) < 2:
        raise StackError(f"{where}: expected a (T, H, W) stack of 2-D frames, got shape {shape}")
    if axes is not None and len(axes) != len(shape):
        raise StackError(f"{where}: --axes {axes} has {len(axes)} letters, the stack has {len(shape)} dimensions {shape}")
    letters = axes or _metadata_free_axes(shape, channel, z, where)
    _refuse_planes_without_time(letters, shape, where, axes, channel, z)
    plan = _plan(letters, shape, channel, z, where)

    def read(i: int) -> np.ndarray:
        frame = arr[plan.index(i, len(shape))]
        frame = np.array(frame) if copy else np.asarray(frame)
        return frame.T if plan.transpose else frame

    h, w = (shape[letters.index("Y")], shape[letters.index("X")])
    return Stack(_describe(where, plan), plan.frames, (h, w), arr.dtype, read, close, letters)


def _describe(where: str, plan: _Plan) -> str:
    return f"{where} ({plan.picked})" if plan.picked else where


def _tiff_stack(path: Path, axes: str | None, channel: int | None, z: int | None) -> Stack:
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        planes = tiff_planes(tif)
        shape, letters = planes.shape, planes.axes
        if axes is not None and len(axes) != len(shape):
            raise StackError(f"{path}: --axes {axes} has {len(axes)} letters; the file's axes are {letters}, "
                             f"shape {shape}")
        if axes is not None:
            letters = axes
        elif set(letters) <= set("QIYX"):  # a TIFF without axis metadata: an array
            letters = _metadata_free_axes(shape, channel, z, str(path))
        _refuse_planes_without_time(letters, shape, str(path), axes, channel, z)
        plan = _plan(letters, shape, channel, z, str(path))
        outer = shape[: len(shape) - planes.page_dims]

        def read(i: int) -> np.ndarray:
            idx = plan.index(i, len(shape))
            k = int(np.ravel_multi_index(idx[: len(outer)], outer)) if outer else 0
            try:
                plane = planes.read(k)
            except PlaneUnreadable as exc:
                raise FrameUnreadable(f"{path}: frame {i} cannot be read ({exc.cause})", exc.cause) from exc
            frame = np.asarray(plane.reshape(shape[len(outer):])[idx[len(outer):]])
            return frame.T if plan.transpose else frame

        h, w = shape[letters.index("Y")], shape[letters.index("X")]
        return Stack(_describe(str(path), plan), plan.frames, (h, w), planes.dtype, read, tif.close, letters,
                     damage=planes.damage)
    except BaseException:
        tif.close()
        raise


def _h5_datasets(f: Any) -> list[str]:
    """Every dataset of two or more dimensions in the file, nested ones included, with its shape."""
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
            found.append(f"/{name} {tuple(obj.shape)}")

    f.visititems(visit)
    return found


def open_stack(spec: str | Path, channel: int | None = None, z: int | None = None,
               axes: str | None = None) -> Stack:
    """Open a stack for frame-by-frame reading (see the module docstring for axes).

    Raises StackError naming the file and what is wrong with it.
    """
    path_str, dataset = split_h5_path(str(spec))
    path = Path(path_str)
    if not path.exists():
        raise StackError(f"stack {path} does not exist")
    if path.is_dir():
        raise StackError(f"stack {path} is a folder; give a TIFF, .npy or HDF5 file (use `lagsplit watch` for folders)")
    if axes is not None:
        try:
            axes = check_axes(axes)
        except ValueError as exc:
            raise StackError(f"{path}: {exc}") from None
    for option, value in (("--channel", channel), ("--z", z)):
        if value is not None and value < 0:
            raise StackError(f"{path}: {option} must be 0 or more, got {value}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
            return _array_stack(arr, str(path), axes, channel, z, close=lambda: None, copy=True)
        if suffix in (".h5", ".hdf5", ".hdf"):
            return _h5_stack(path, dataset, axes, channel, z)
        if path.name.lower().endswith((".tif", ".tiff")):
            return _tiff_stack(path, axes, channel, z)
    except StackError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise StackError(f"cannot read stack {path}: {type(exc).__name__}: {exc}") from exc
    raise StackError(f"stack {path}: unsupported format {suffix!r} (TIFF / OME-TIFF, .npy, or FILE.h5:/dataset)")


def _h5_stack(path: Path, dataset: str | None, axes: str | None, channel: int | None, z: int | None) -> Stack:
    import h5py

    f = h5py.File(path, "r")
    try:
        if dataset is None:
            names = _h5_datasets(f)
            raise StackError(f"{path}: name the dataset as {path}:/NAME "
                             f"(datasets here: {', '.join(names) or 'none of two or more dimensions'})")
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            names = _h5_datasets(f)
            raise StackError(f"{path}: no dataset {dataset} (datasets here: {', '.join(names) or 'none'})")
        where = f"{path}:{dataset}"
        return _array_stack(f[dataset], where, axes, channel, z, close=f.close, copy=False)
    except BaseException:
        f.close()
        raise
