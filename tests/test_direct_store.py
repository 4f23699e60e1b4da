"""An OME-Zarr store's image chunks written past the page cache (engine/direct_store.py) read
back exactly, padding cut off, through a real store on disk; a file system that refuses
O_DIRECT gets ordinary writes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from lagsplit.engine.direct_store import DIRECT_MIN_BYTES, DirectStore  # noqa: E402


def _write(store, frames: np.ndarray, compressors=None) -> None:
    root = zarr.open_group(store, mode="w", zarr_format=3)
    arr = root.create_array("img", shape=(0, *frames.shape[1:]), chunks=(1, 512, 512), dtype=frames.dtype,
                            compressors=compressors, fill_value=0)
    for i, f in enumerate(frames):
        arr.resize((i + 1, *arr.shape[1:]))
        arr[i] = f


@pytest.mark.parametrize("compressed", [False, True])
def test_large_chunks_go_direct_and_read_back_exactly(tmp_path, compressed):
    rng = np.random.default_rng(1)
    frames = rng.normal(100, 10, (3, 600, 1024)).astype(np.float32)  # full 1 MiB chunks and partial edge ones
    store = DirectStore(tmp_path / "s.zarr")
    _write(store, frames, zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle") if compressed else None)
    assert store.direct  # the temporary folder's file system took O_DIRECT writes
    back = zarr.open_array(tmp_path / "s.zarr" / "img", mode="r")[:]
    np.testing.assert_array_equal(back, frames)
    chunk = tmp_path / "s.zarr" / "img" / "c" / "0" / "0" / "0"
    size = chunk.stat().st_size
    assert size >= DIRECT_MIN_BYTES and (compressed or size == 512 * 512 * 4)
    sizes = [p.stat().st_size for p in (tmp_path / "s.zarr" / "img" / "c").rglob("*") if p.is_file()]
    assert not compressed or any(n % 4096 for n in sizes)  # the padding that aligned the writes is cut off
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_a_file_system_without_direct_writes_gets_ordinary_ones(tmp_path, monkeypatch):
    real_open = os.open

    def refuse_direct(path, flags, *a, **kw):
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")  # what tmpfs answers
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", refuse_direct)
    frames = np.arange(2 * 512 * 512, dtype=np.float32).reshape(2, 512, 512)
    store = DirectStore(Path(tmp_path) / "s.zarr")
    _write(store, frames)
    assert not store.direct
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr" / "img", mode="r")[:], frames)
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))
