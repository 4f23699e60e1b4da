"""``lagsplit batch --split N``: one long recording on several workers. Its frames are cut
into N time chunks; each chunk but the first starts ``overlap`` frames early so that its
windows, fading reference and networks are warm at its first kept frame, and those
overlap rows are discarded. The chunks' outputs are then merged, in order, into one
file that reads as one run's: every per-frame dataset holds each frame once."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lagsplit.engine.checkpoint import checkpoint_path
from lagsplit.engine.hdf5_sink import COUNTER_NAMES, committed_rows, per_frame_datasets, read_counters

from .task import Outcome, finish_output, output_rows


@dataclass(frozen=True)
class Chunk:
    """Frames ``keep_from`` .. ``stop - 1`` are this chunk's; it plays from ``start``."""

    number: int
    start: int
    keep_from: int
    stop: int


def chunks(frames: int, n: int, overlap: int) -> list[Chunk]:
    """``frames`` cut into ``n`` chunks of (nearly) equal length; ValueError when a chunk
    would hold no frame."""
    if n < 1:
        raise ValueError(f"--split {n}: give 1 or more chunks")
    if n > frames:
        raise ValueError(f"--split {n}: the recording has only {frames} frames")
    bounds = [round(k * frames / n) for k in range(n + 1)]
    return [Chunk(k, max(0, bounds[k] - overlap), bounds[k], bounds[k + 1]) for k in range(n)]


def _first_row_from(f: h5py.File, index: int, rows: int) -> int:
    return int(np.searchsorted(f["frames/index"][:rows], index))


def _append(dst: h5py.Dataset, values: np.ndarray) -> None:
    n = dst.shape[0]
    dst.resize(n + len(values), axis=0)
    dst[n:] = values


def merge_chunks(parts: list[tuple[Path, Chunk]], partial: Path, final: Path, key: str) -> Outcome:
    """Merge the chunks' outputs (in chunk order) into ``partial``, then move it to ``final``
    and remove the chunks' files. Run by a worker, after every chunk has finished."""
    import time

    t0 = time.perf_counter()
    tmp = partial.with_name(partial.name + ".merging")
    first_path, _ = parts[0]
    with h5py.File(first_path, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        rows0 = committed_rows(src)
        per_frame = per_frame_datasets(src)
        for name, value in src.attrs.items():
            dst.attrs[name] = value
        for name in src:
            if name not in ("counters", "flushed_rows"):
                src.copy(src[name], dst, name=name)
        for name in per_frame:  # rows past the committed ones (none in a finished chunk) go
            dst[name].resize(rows0, axis=0)
        counts = read_counters(src)
        for path, chunk in parts[1:]:
            with h5py.File(path, "r") as f:
                rows = committed_rows(f)
                r0 = _first_row_from(f, chunk.keep_from, rows)
                for name in per_frame:
                    _append(dst[name], f[name][r0:rows])
                for name in ("step", "loss"):
                    _append(dst[f"train/{name}"], f[f"train/{name}"][:])
                gaps = f["gaps"]
                mine = gaps["first_index"][:] >= chunk.keep_from
                for name in ("first_index", "count", "reason"):
                    _append(dst[f"gaps/{name}"], gaps[name][:][mine])
                more = read_counters(f)
                for name in COUNTER_NAMES:
                    counts[name] = counts.get(name, 0) + more.get(name, 0)
        total = dst["frames/index"].shape[0]
        if total > 1 and np.any(np.diff(dst["frames/index"][:]) <= 0):
            raise RuntimeError(f"merging {final.name}: the chunks' frame numbers do not increase")
        counts["processed"] = total
        counts["received"] = max(0, counts.get("received", 0) - sum(c.keep_from - c.start for _, c in parts))
        cnt = dst.create_dataset("counters", data=np.asarray([counts.get(n, 0) for n in COUNTER_NAMES], np.int64))
        cnt.attrs.create("names", list(COUNTER_NAMES), dtype=h5py.string_dtype())
        dst.create_dataset("flushed_rows", data=np.int64(total))
        config = json.loads(dst.attrs.get("config", "{}"))
        config.setdefault("source", {}).update(start=parts[0][1].start, stop=parts[-1][1].stop)
        dst.attrs["config"] = json.dumps(config, sort_keys=True)
        dst.attrs["source"] = re.sub(r" \(\d+ frames", f" ({total} frames", str(dst.attrs.get("source", "")), count=1) \
            + f", in {len(parts)} chunks (lagsplit batch --split)"
        dst.attrs["split_seams"] = np.asarray([c.keep_from for _, c in parts[1:]], np.int64)
        dst.attrs["split_overlap"] = np.asarray([c.keep_from - c.start for _, c in parts], np.int64)
    os.replace(tmp, partial)
    finish_output(partial, final)
    for path, _ in parts:
        path.unlink(missing_ok=True)
        checkpoint_path(path).unlink(missing_ok=True)
    rows, warm = output_rows(final)
    return Outcome(key, "ok", rows, warm, time.perf_counter() - t0)
