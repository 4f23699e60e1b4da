"""The planes of a TIFF stack, read one at a time, from a whole file or a damaged one.

tifffile describes a file's first series (axes, shape) and where its planes lie: a page
each, or one contiguous block after the first page (ImageJ hyperstacks and tifffile's own
files, which write the other pages' IFDs after the block). A file cut short, as an
acquisition that crashed mid-write leaves it, loses its last planes and, with a block
layout, every IFD but the first; a corrupt IFD hides every page after it. tifffile then
reads no more than the pages it still finds, or fails on the whole series.
``tiff_planes`` takes the series the first page's ImageJ or tifffile ("shaped")
description declares and reads each plane on its own: every plane the file holds is
read, and each one it cannot give (cut off, after a corrupt IFD, or a page that does not
decode) raises ``PlaneUnreadable`` saying why, so a replay plays the rest and records
those frames as rejected. A file that declares no frame count and breaks off is read as
far as it goes, and ``TiffPlanes.damage`` says that frames after it are not counted.
What tifffile logs while it parses a file found damaged is passed on at debug level: the
damage is told once, by the caller, in the caller's words.
"""
from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


class PlaneUnreadable(ValueError):
    """A plane the file cannot give. ``cause`` says why, in the same words for every plane
    lost the same way (e.g. "file truncated at byte 395,850")."""

    def __init__(self, plane: int, cause: str) -> None:
        super().__init__(f"plane {plane}: {cause}")
        self.plane = plane
        self.cause = cause


@dataclass(frozen=True)
class TiffPlanes:
    """The first series of a TIFF file, read plane by plane."""

    axes: str
    """tifffile's axis letters of ``shape`` (upper case)."""
    shape: tuple[int, ...]
    dtype: np.dtype
    page_dims: int
    """How many trailing dimensions of ``shape`` one plane holds."""
    read: Callable[[int], np.ndarray]
    """Plane ``k`` (counted over the leading dimensions, C order), shaped ``shape[-page_dims:]``;
    PlaneUnreadable when the file cannot give it."""
    damage: str | None = None
    """How the file is damaged ("file truncated at byte N"); None when it looks whole."""


def tiff_planes(tif: Any) -> TiffPlanes:
    """The series ``tif`` (an open ``tifffile.TiffFile``) holds, each plane read on its own."""
    with _held_back(logging.getLogger("tifffile")) as held:
        planes = _parsed(tif)
    tifffile_log = logging.getLogger("tifffile")
    for record in held:
        if planes.damage is not None:  # the caller tells the damage; tifffile's words are details
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if tifffile_log.isEnabledFor(record.levelno):
            tifffile_log.handle(record)
    return planes


@contextmanager
def _held_back(logger: logging.Logger) -> Iterator[list[logging.LogRecord]]:
    """The records ``logger`` logs in the block, kept in a list instead of passed on."""
    held: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = held.append  # type: ignore[method-assign]
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield held
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _parsed(tif: Any) -> TiffPlanes:
    """``tiff_planes`` without its handling of tifffile's log."""
    series = tif.series[0]
    first = tif.pages[0]
    declared = _declared(tif)
    if declared is not None and _planes(declared[1], first) > _planes(tuple(series.shape), first):
        # the first page declares more planes than tifffile found: read what a damaged file holds
        pages = list(tif.pages)
        damage = _damage(tif, pages[-1])
        if damage is not None:
            return _recovered(tif, pages, declared, damage)
    pages = _listed(series)
    last = next((p for p in reversed(pages) if p is not None), None)
    damage = None if last is None else _damage(tif, last)
    if damage is not None and declared is None:
        # nothing says how many planes there were: those after the last listed page go uncounted
        damage = f"{damage}, and frames after its last listed page are not counted"
    planes = _series_planes(tif, series, pages, damage or _truncated(tif.filehandle.size))
    offset = series.dataoffset
    if damage is None and offset is not None and int(offset) + int(series.nbytes) > tif.filehandle.size:
        damage = _truncated(tif.filehandle.size)
    return replace(planes, damage=damage)


def _damage(tif: Any, last: Any) -> str | None:
    """How the file breaks off at page ``last``: its data or the next page's IFD past the
    end of the file (truncated), or a next page that cannot be read (a corrupt page list);
    None when ``last`` is whole and ends the list or the next page reads."""
    size = tif.filehandle.size
    if _data_end(last) > size:
        return _truncated(size)
    after = _next_page_offset(tif, last)
    if after == 0:
        return None
    if after >= size:
        return _truncated(size)
    try:
        tif.pages[int(last.index) + 1]
    except Exception:  # noqa: BLE001 - any failure to find or parse the next page
        return f"corrupt page list (the page at byte {after:,} cannot be read)"
    return None


def _listed(series: Any) -> list:
    """The pages of ``series``, None for each one tifffile cannot give (a page the series
    counts whose IFD a file cut short lost)."""
    pages = series.pages
    out = []
    for i in range(len(pages)):
        try:
            out.append(pages[i])
        except Exception:  # noqa: BLE001 - any failure to find or parse the page: it is not there
            out.append(None)
    return out


def _planes(shape: tuple[int, ...], page: Any) -> int:
    """How many pages of ``page``'s size ``shape`` holds."""
    return int(np.prod(shape)) // max(1, int(np.prod(page.shape)))


def _series_planes(tif: Any, series: Any, pages: list, missing: str) -> TiffPlanes:
    """The series as tifffile describes it: a page per plane, a contiguous block, or (when
    neither) the whole series read at once. ``missing``: why a page is not there."""
    shape, axes, dtype = tuple(int(s) for s in series.shape), series.axes.upper(), np.dtype(series.dtype)
    first = pages[0]
    dims = _page_dims(shape, len(pages), first)
    if dims is not None and all(p is not None for p in pages):
        return TiffPlanes(axes, shape, dtype, dims, _page_reader(tif, pages, shape[len(shape) - dims:], missing))
    offset = series.dataoffset
    if offset is not None and first is not None and first.is_final:
        dims = _page_dims(shape, _planes(shape, first), first)
        if dims is not None:
            return TiffPlanes(axes, shape, dtype, dims, _block_reader(tif, offset, shape[len(shape) - dims:], dtype))
    data = series.asarray()  # no plane-by-plane layout to read from: the whole series
    return TiffPlanes(axes, shape, dtype, len(shape), lambda k: data)


def _page_dims(shape: tuple[int, ...], n_pages: int, first: Any) -> int | None:
    """How many trailing dimensions of the series ``shape`` one page holds (None: the
    pages do not tile the series one plane each)."""
    if first is None:
        return None
    page_size = int(np.prod(first.shape))
    for k in range(len(shape) + 1):
        if int(np.prod(shape[:k])) == n_pages and int(np.prod(shape[k:])) == page_size:
            return len(shape) - k
    return None


def _truncated(size: int) -> str:
    return f"file truncated at byte {size:,}"


def _data_end(page: Any) -> int:
    return max((int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)), default=0)


def _next_page_offset(tif: Any, page: Any) -> int:
    """Where the IFD after ``page`` starts (0: none), read from the file."""
    t = tif.tiff
    fh = tif.filehandle
    with fh.lock:
        fh.seek(page.offset)
        head = fh.read(t.tagnosize)
        if len(head) < t.tagnosize:
            return 0
        fh.seek(page.offset + t.tagnosize + struct.unpack(t.tagnoformat, head)[0] * t.tagsize)
        tail = fh.read(t.offsetsize)
    return int(struct.unpack(t.offsetformat, tail)[0]) if len(tail) == t.offsetsize else 0


def _declared(tif: Any) -> tuple[str, tuple[int, ...]] | None:
    """(axes, shape) of the first series as the first page's ImageJ or tifffile description
    declares it; None when it declares none or one this module does not read."""
    first = tif.pages[0]
    page_shape, page_axes = tuple(int(s) for s in first.shape), first.axes.upper()
    meta = tif.imagej_metadata
    if meta is not None:
        if str(meta.get("order", "czt")).lower() not in ("czt", "default"):
            return None
        images = int(meta.get("images", 1))
        outer = [(a, int(meta.get(k, 1))) for a, k in (("T", "frames"), ("Z", "slices"), ("C", "channels"))]
        outer = [(a, n) for a, n in outer if n > 1]
        if int(np.prod([n for _, n in outer])) != images:
            if outer or images <= 1:
                return None
            outer = [("I", images)]
        return "".join(a for a, _ in outer) + page_axes, tuple(n for _, n in outer) + page_shape
    shaped = tif.shaped_metadata if tif.is_shaped else None
    if not shaped:
        return None
    meta = shaped[0]
    shape = tuple(int(s) for s in meta.get("shape", ()))
    if len(shape) < len(page_shape) or shape[len(shape) - len(page_shape):] != page_shape:
        return None
    axes = str(meta.get("axes", "")).upper()
    if len(axes) != len(shape):
        axes = "Q" * (len(shape) - len(page_shape)) + page_axes
    return axes, shape


def _recovered(tif: Any, pages: list, declared: tuple[str, tuple[int, ...]], damage: str) -> TiffPlanes:
    """The declared series of a damaged file: its planes read from a contiguous block after
    the first page, or from the pages the file still lists; those beyond them lost (why:
    ``damage``)."""
    axes, shape = declared
    first = pages[0]
    dtype = np.dtype(first.dtype)
    dims = len(first.shape)
    plane = shape[len(shape) - dims:]
    block = first.is_final and (len(pages) == 1 or tuple(pages[1].dataoffsets[:1]) == (_data_end(first),))
    if block:
        read = _block_reader(tif, int(first.dataoffsets[0]), plane, dtype)
    else:
        read = _page_reader(tif, pages, plane, damage)
    return TiffPlanes(axes, shape, dtype, dims, read, damage)


def _page_reader(tif: Any, pages: list, plane: tuple[int, ...], missing: str) -> Callable[[int], np.ndarray]:
    """Plane ``k`` from page ``k``: a page the file lacks is ``missing`` (why), one whose data
    the file cuts off "truncated", one that does not decode corrupt."""
    size = tif.filehandle.size

    def read(k: int) -> np.ndarray:
        page = pages[k] if k < len(pages) else None
        if page is None:
            raise PlaneUnreadable(k, missing)
        if _data_end(page) > size:
            raise PlaneUnreadable(k, _truncated(size))
        try:
            return page.asarray().reshape(plane)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the page's fault
            raise PlaneUnreadable(k, f"corrupt page ({str(exc)[:80] or type(exc).__name__})") from exc

    return read


def _block_reader(tif: Any, offset: int, plane: tuple[int, ...], dtype: np.dtype) -> Callable[[int], np.ndarray]:
    """Plane ``k`` from a contiguous block of planes at ``offset``; one that ends past the
    end of the file is "truncated"."""
    fh = tif.filehandle
    size = fh.size
    stored = np.dtype(tif.byteorder + dtype.char)
    nbytes = int(np.prod(plane)) * stored.itemsize

    def read(k: int) -> np.ndarray:
        start = offset + k * nbytes
        if start + nbytes > size:
            raise PlaneUnreadable(k, _truncated(size))
        with fh.lock:
            fh.seek(start)
            data = fh.read(nbytes)
        return np.frombuffer(data, stored).astype(dtype.newbyteorder("=")).reshape(plane)

    return read
