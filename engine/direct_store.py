"""A Zarr local store that writes large chunks past the page cache (``O_DIRECT``).

A frame's image chunks are written once and not read back by the writer, so caching them
buys nothing; a page-cache write costs the writer a copy into newly allocated pages (on a
virtual machine, pages the host backs on first touch, several times slower than the disk),
while a direct write goes from one reused, page-aligned buffer straight to the disk. Each
chunk is still written to a temporary file renamed into place, as ``LocalStore`` does, so a
reader or a kill never sees half of one. Small values (metadata documents, table chunks) and
file systems that refuse ``O_DIRECT`` (tmpfs) take ``LocalStore``'s ordinary path.
"""
from __future__ import annotations

import asyncio
import errno
import mmap
import os
import threading
import uuid
from pathlib import Path

import numpy as np
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore
from zarr.storage._local import _put

ALIGN = 4096  # bytes: O_DIRECT's alignment of buffer address, file offset and length on Linux file systems
DIRECT_MIN_BYTES = 256 * 1024  # smaller values go through the page cache


class DirectStore(LocalStore):
    """``LocalStore`` whose values of at least DIRECT_MIN_BYTES are written with O_DIRECT
    where the file system allows it (else, for the rest of the store's life, as ``LocalStore``)."""

    def __init__(self, root: str | os.PathLike, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.direct = hasattr(os, "O_DIRECT")
        self._buffers = threading.local()  # one aligned buffer per writing thread, reused

    def with_read_only(self, read_only: bool = False) -> DirectStore:
        return type(self)(self.root, read_only=read_only)

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if exclusive or not self.direct or len(value) < DIRECT_MIN_BYTES:
            return await super()._set(key, value, exclusive=exclusive)
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(self._put_direct, self.root / key, value)

    def _buffer(self, n: int) -> mmap.mmap:
        buf = getattr(self._buffers, "buf", None)
        if buf is None or len(buf) < n:
            buf = self._buffers.buf = mmap.mmap(-1, n)  # anonymous: page-aligned
        return buf

    def _put_direct(self, path: Path, value: Buffer) -> None:
        data = np.frombuffer(value.as_buffer_like(), np.uint8)
        n = len(data)
        padded = -(-n // ALIGN) * ALIGN
        buf = self._buffer(padded)
        np.frombuffer(buf, np.uint8, count=n)[:] = data
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
            try:
                with memoryview(buf) as view:
                    done = 0
                    while done < padded:
                        done += os.pwrite(fd, view[done:padded], done)
                if padded != n:
                    os.ftruncate(fd, n)  # the padding that aligned the last block is cut off
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # this file system takes no direct writes: the page cache from now on
            _put(path, value)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
