"""The file-consistency flags in an HDF5 superblock, read and cleared (what ``h5clear -s``
does), in Python.

A writer that opens a file with ``libver="latest"`` (superblock version 3, which SWMR
needs) marks it "open for write" in the superblock and clears the mark when it closes the
file. A writer that is killed leaves the mark behind: readers that pass ``swmr=True`` open
the file anyway, every other reader (h5py without it, Fiji, HDFView) refuses it with
"file is already open for write". Clearing the mark rewrites 1 byte and the superblock's
checksum; nothing else in the file changes.

Superblock versions 2 and 3 (HDF5 file format specification, "Superblock"): signature
(8 bytes), version, size of offsets, size of lengths, the flags byte, four addresses,
then a Jenkins lookup3 checksum of everything before it.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITE_ACCESS = 0x01  # open for writing
SWMR_WRITE_ACCESS = 0x04  # open for single-writer / multiple-reader writing
_M = 0xFFFFFFFF


class NotHDF5(ValueError):
    """The file holds no HDF5 superblock this module knows (names the file)."""


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum HDF5 puts on its metadata."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M  # noqa: E702 - lookup3's mix, as published
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M  # noqa: E702
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M  # noqa: E702
        i += 12
    if i == n:
        return c
    rest = data[i:] + bytes(12 - (n - i))
    a = (a + int.from_bytes(rest[0:4], "little")) & _M
    b = (b + int.from_bytes(rest[4:8], "little")) & _M
    c = (c + int.from_bytes(rest[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M  # noqa: E702 - lookup3's final, as published
    a ^= c; a = (a - _rot(c, 11)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M  # noqa: E702
    return c


def _locate(fh) -> tuple[int, bytearray]:
    """Offset and bytes of the superblock (at 0, or 512, 1024, ... after a user block)."""
    size = os.fstat(fh.fileno()).st_size
    offset = 0
    while offset + 8 <= size:
        fh.seek(offset)
        head = fh.read(64)
        if head[:8] == SIGNATURE:
            return offset, bytearray(head)
        offset = 512 if offset == 0 else offset * 2
    raise NotHDF5(f"{getattr(fh, 'name', 'file')} is not an HDF5 file (no superblock signature)")


def _layout(path: str | os.PathLike, head: bytearray) -> int:
    """Length of the checksummed part of a version 2 / 3 superblock."""
    if head[8] not in (2, 3):
        raise NotHDF5(f"{path}: superblock version {head[8]} has no consistency flags to clear")
    return 12 + 4 * head[9]


def write_flags(path: str | os.PathLike) -> int:
    """The file-consistency flags of ``path`` (0: closed cleanly, or an older superblock
    without them). NotHDF5 when it is not an HDF5 file."""
    with open(path, "rb") as fh:
        _, head = _locate(fh)
    return head[11] if head[8] in (2, 3) else 0


def open_for_write(path: str | os.PathLike) -> bool:
    """True while a writer has the file open, or after one was killed before closing it."""
    return bool(write_flags(path) & (WRITE_ACCESS | SWMR_WRITE_ACCESS))


def stored_eof(path: str | os.PathLike) -> int:
    """Where the superblock says the file ends (its end-of-file address plus the base
    address), in bytes. A writer that failed (a full disk) or was killed may have recorded
    more than it managed to write."""
    with open(path, "rb") as fh:
        offset, head = _locate(fh)
    n = _layout(path, head)
    size = head[9]
    base = int.from_bytes(head[12:12 + size], "little")
    eof = int.from_bytes(head[12 + 2 * size:12 + 3 * size], "little")
    assert 12 + 4 * size == n
    return base + eof + (offset if base == 0 else 0)


def release(path: str | os.PathLike) -> list[str]:
    """What a killed or failed writer left, undone so that any reader opens the file: the
    open-for-write mark cleared, and a file shorter than its superblock says padded with
    zeros to that length (space the writer allocated but never wrote; no data is lost).
    Returns what was done, in words."""
    done = []
    if clear_write_flags(path):
        done.append("cleared the open-for-write mark its writer left")
    end, size = stored_eof(path), os.path.getsize(path)
    if size < end:
        os.truncate(path, end)
        done.append(f"padded the file from {size} to the {end} bytes its superblock names")
    return done


def clear_write_flags(path: str | os.PathLike) -> bool:
    """Clear the "open for write" mark a killed writer left; True when there was one. Only
    the flags byte and the checksum are rewritten, and they are checked first: a
    superblock whose checksum does not match is left alone (NotHDF5)."""
    path = Path(path)
    with open(path, "r+b") as fh:
        offset, head = _locate(fh)
        n = _layout(path, head)
        (stored,) = struct.unpack_from("<I", head, n)
        if lookup3(bytes(head[:n])) != stored:
            raise NotHDF5(f"{path}: the superblock's checksum does not match; not touching it")
        if head[11] == 0:
            return False
        head[11] = 0
        struct.pack_into("<I", head, n, lookup3(bytes(head[:n])))
        fh.seek(offset)
        fh.write(head[:n + 4])
        fh.flush()
        os.fsync(fh.fileno())
    return True


__all__ = ["NotHDF5", "clear_write_flags", "lookup3", "open_for_write", "release", "stored_eof", "write_flags"]
