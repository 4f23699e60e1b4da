"""``lagsplit batch --split N``: one long recording on several workers. Its frames are cut
into N time chunks; each chunk but the first starts ``overlap`` frames early so that its
windows, fading reference and networks are warm at its first kept frame, and those
overlap rows are discarded. The chunks' outputs are then merged, in order, into one
output that reads as one run's (written by the sink of its format, HDF5 or OME-Zarr):
every per-frame array holds each frame once."""
from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lagsplit.engine.checkpoint import checkpoint_path
from lagsplit.engine.config import OutputConfig
from lagsplit.engine.contracts import COUNTER_NAMES, RunInfo
from lagsplit.engine.frame import Decomposition
from lagsplit.engine.hdf5_sink import FRAME_COLUMNS, GAP_REASONS
from lagsplit.engine.outputs import make_sink

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


RUN_ATTRS = frozenset({"lagsplit_version", "config", "lags", "source", "created", "shape", "input_dtype", "run_id",
                       "writer_host", "writer_pid", "open_for_write"})
"""Attributes a sink writes of its own; the others are the source's (RunInfo.extra)."""
ROWS_AT_ONCE = 32
"""Rows of a chunk read at once while merging."""


def _run_info(f, parts: list[tuple[Path, Chunk]], total: int) -> RunInfo:
    """The merged output's RunInfo: the first chunk's, with the whole recording's frames in
    its source line and config, and the seams among the source's attributes."""
    config = dict(f.config)
    config["source"] = {**config.get("source", {}), "start": parts[0][1].start, "stop": parts[-1][1].stop}
    source = re.sub(r" \(\d+ frames", f" ({total} frames", str(f.attrs.get("source", "")), count=1)
    extra = {k: v for k, v in dict(f.attrs).items() if k not in RUN_ATTRS}
    extra["split_seams"] = [c.keep_from for _, c in parts[1:]]
    extra["split_overlap"] = [c.keep_from - c.start for _, c in parts]
    return RunInfo(shape=tuple(int(x) for x in f.attrs["shape"]), dtype=str(f.attrs["input_dtype"]),
                   lags=tuple(int(x) for x in f.attrs["lags"]),
                   source=f"{source}, in {len(parts)} chunks (lagsplit batch --split)",
                   config_json=json.dumps(config, sort_keys=True), components="components/residual" in f,
                   extra=extra)


def _rows(f, r0: int, r1: int, lags: tuple[int, ...]):
    """The decompositions of rows r0 .. r1 - 1 of a run, as its sink was given them."""
    images = {name: f[name][r0:r1] for name in ("slow", "fast", "raw", *(f"components/lag_{lag}" for lag in lags),
                                                "components/residual") if name in f}
    frames = {name: f[f"frames/{name}"][r0:r1] for name, _ in FRAME_COLUMNS if f"frames/{name}" in f}
    for k in range(r1 - r0):
        comps = ({lag: images[f"components/lag_{lag}"][k] for lag in lags}
                 if "components/residual" in images else None)
        slow, fast = images["slow"][k], images["fast"][k]
        yield Decomposition(
            index=int(frames["index"][k]), timestamp=float(frames["timestamp"][k]),
            raw=images["raw"][k] if "raw" in images else slow + fast, slow=slow, fast=fast, components=comps,
            residual=images["components/residual"][k] if comps is not None else None,
            model_version=int(frames["model_version"][k]), warmup=bool(frames["warmup"][k]),
            latency_ms=float(frames["latency_ms"][k]), flags=int(frames.get("flags", [0] * (r1 - r0))[k]),
            shed=int(frames.get("shed", [0] * (r1 - r0))[k]), gate=float(frames.get("gate", [np.nan] * (r1 - r0))[k]))


def merge_chunks(parts: list[tuple[Path, Chunk]], partial: Path, final: Path, key: str) -> Outcome:
    """Write the chunks' rows (each from its first kept frame, in chunk order), their gaps
    and training logs into a new output at ``partial`` through the sink of its format, move
    it to ``final`` and remove the chunks' outputs. Run by a worker once every chunk ended."""
    t0 = time.perf_counter()
    from lagsplit.run_file import open_run

    runs = [open_run(path) for path, _ in parts]
    try:
        kept = [(f, int(np.searchsorted(f["frames/index"][: f.whole_rows()], c.keep_from)), f.whole_rows(), c)
                for f, (_, c) in zip(runs, parts, strict=True)]
        total = sum(r1 - r0 for _, r0, r1, _ in kept)
        first = runs[0]
        info = _run_info(first, parts, total)
        cfg = OutputConfig.model_validate({**first.config.get("output", {}), "path": str(partial), "overwrite": True,
                                           "resume": False})
        sink = make_sink(partial, cfg, str(first.attrs.get("lagsplit_version", "")),
                         run_id=str(first.attrs.get("run_id", "")) or None, resume=None)
        counts = dict.fromkeys(COUNTER_NAMES, 0)
        last = -1
        try:
            sink.setup(info)
            for f, r0, r1, chunk in kept:
                for a in range(r0, r1, ROWS_AT_ONCE):
                    for r in _rows(f, a, min(r1, a + ROWS_AT_ONCE), info.lags):
                        if r.index <= last:
                            raise RuntimeError(f"merging {final.name}: frame {r.index} comes again after {last}")
                        sink.append(r)
                        last = r.index
                firsts, ns, why = (f[f"gaps/{k}"][:] for k in ("first_index", "count", "reason"))
                for g, n, reason in zip(firsts, ns, why, strict=True):
                    if g >= chunk.keep_from:
                        sink.skip(int(g), int(n), GAP_REASONS[int(reason)])
                log = getattr(sink, "train_log", None)
                if log is not None and "train/step" in f:
                    for step, losses in zip(f["train/step"][:], f["train/loss"][:], strict=True):
                        log(int(step), [float(x) for x in losses])
                for name, v in f.counters().items():
                    counts[name] = counts.get(name, 0) + v
            counts["processed"] = total
            counts["received"] = max(0, counts["received"] - sum(c.keep_from - c.start for _, c in parts))
            update = getattr(sink, "update_counters", None)
            if update is not None:
                update(counts)
        finally:
            sink.close()
    finally:
        for f in runs:
            f.close()
    finish_output(partial, final)
    for path, _ in parts:
        remove_output(path)
    rows, warm = output_rows(final)
    return Outcome(key, "ok", rows, warm, time.perf_counter() - t0)


def remove_output(path: Path) -> None:
    """An output (file or store) and its checkpoint, gone."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    checkpoint_path(path).unlink(missing_ok=True)
