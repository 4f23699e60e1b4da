"""The output path's throughput: `lagsplit bench speed`'s sink table (alone with ``--sinks-only``).

At each frame size, in a fresh process: the engine alone replays a movie as fast as possible
(networks in use, no training, no file) and keeps the decompositions of its last frames (raw,
slow, fast); then each sink setting (HDF5 or OME-Zarr, each compression the format takes,
float32 or float16 components) writes those same decompositions through the real sink behind
its ``ThreadedSink``, as a run does, into a temporary folder. A setting's rate is its frames
from the first append until the sink is closed (the writes in the page cache), and until the
disk has them (``os.sync()``). At the largest size, live runs at the engine's own rate with the
default sink and the fastest of those that write past the page cache say whether the output keeps up.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .benchmarks_md import machine, update_section

SINK_MIN_SIZE = 512  # the full `bench speed` measures the sinks at sizes from this up
SINK_FRAMES = 24  # frames each setting writes at 2048 px (more at smaller sizes, by area, at most 2x)
SETTING_BUDGET_S = 12.0  # a setting stops taking frames after this long (gzip at 2048 px is slow)
SKIP_FIRST = 12  # the engine's first frames (allocations, filling the windows) are not in its rate
LIVE = ["engine.overflow=drop", "train.min_steps_per_frame=0"]  # the live policy, as in the live runs


@dataclass(frozen=True)
class SinkSetting:
    format: str  # "hdf5" or "ome-zarr"
    compression: str
    dtype: str  # output.dtype: the components' type on disk
    direct_io: bool = True  # output.direct_io (an OME-Zarr store's image chunks past the page cache)

    @property
    def suffix(self) -> str:
        return ".h5" if self.format == "hdf5" else ".ome.zarr"

    @property
    def overrides(self) -> list[str]:
        return [f"output.compression={self.compression}", f"output.dtype={self.dtype}",
                f"output.direct_io={str(self.direct_io).lower()}"]

    @property
    def page_cache(self) -> bool:
        """Its image writes go through the page cache (HDF5; OME-Zarr without ``output.direct_io``)."""
        return self.format == "hdf5" or not self.direct_io

    @property
    def label(self) -> str:
        if self.format == "hdf5":
            return f"HDF5, {self.compression}, {self.dtype}"
        return f"OME-Zarr, {self.compression}, {self.dtype}{'' if self.direct_io else ', page cache'}"


def settings() -> list[SinkSetting]:
    """Every format, each compression it takes here (HDF5's blosc-lz4 only with hdf5plugin
    installed), float32 and float16 components, an OME-Zarr store's image chunks written
    straight to the disk (``output.direct_io``, its default) and through the page cache; the
    default (HDF5, none, float32) first."""
    h5 = ["none", "lzf", "gzip"]
    try:
        import hdf5plugin  # noqa: F401, PLC0415 - optional
        h5.append("blosc-lz4")
    except ImportError:
        pass
    out = [SinkSetting("hdf5", c, d) for c in h5 for d in ("float32", "float16")]
    try:
        import zarr  # noqa: F401, PLC0415 - the zarr extra
        out += [SinkSetting("ome-zarr", c, d) for c in ("none", "blosc-lz4") for d in ("float32", "float16")]
        out += [SinkSetting("ome-zarr", "none", d, direct_io=False) for d in ("float32", "float16")]
    except ImportError:
        pass
    return out


def frames_at(size: int, sink_frames: int) -> int:
    """Frames each setting writes at ``size``: ``sink_frames`` at 2048 px, more by area below, at most 2x."""
    return int(min(2 * sink_frames, max(sink_frames, round(sink_frames * (2048 / size) ** 2))))


def _capture(movie, overrides: list[str], keep: int, total: int) -> tuple[float, list]:
    """The engine alone over ``total`` frames (networks in use, no training, no file): its rate
    between frame SKIP_FIRST and the first one kept, and copies of its last ``keep`` decompositions."""
    from lagsplit.adapters.synthetic import ArrayStream

    from .app import build_run
    from .speed import _config

    kept: list = []
    out_at: dict[int, float] = {}

    class Keep:
        def setup(self, info): ...
        def skip(self, first, count, reason): ...
        def close(self): ...

        def append(self, r):
            out_at[r.index] = time.perf_counter()
            if r.index >= total - keep:  # after the frames the rate is taken over: copying is not timed
                from dataclasses import replace

                kept.append(replace(r, raw=np.array(r.raw), slow=np.array(r.slow), fast=np.array(r.fast)))

    run = build_run(_config([*overrides, "train.mode=off"], None), adapter=ArrayStream(movie, fps=0.0, name="bench"),
                    extra_sinks=[Keep()])
    run.cascade.stage_steps = [run.cascade.warmup_steps] * len(run.cascade.lags)  # networks in use as soon as they can be
    run.engine.run()
    first, last = min(SKIP_FIRST, total // 4), total - keep - 1
    fps = (last - first) / (out_at[last] - out_at[first]) if last > first else float("nan")
    return fps, kept


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_rate(decs: list, setting: SinkSetting, folder: str, overrides: list[str] | None = None,
               budget_s: float = SETTING_BUDGET_S) -> dict:
    """Write ``decs`` through the sink ``setting`` picks, behind its ThreadedSink as a run has it,
    into a new folder in ``folder`` (kept: the page cache holds it until ``folder`` goes, so the
    next setting's writes take fresh pages too): frames/s and MB/s (the decompositions' bytes)
    until it is closed and until the disk has it, and its bytes on disk per frame."""
    from lagsplit.engine.contracts import RunInfo
    from lagsplit.engine.outputs import make_sink
    from lagsplit.engine.threaded_sink import ThreadedSink

    from .speed import _config

    path = str(Path(tempfile.mkdtemp(dir=folder)) / f"sink{setting.suffix}")
    cfg = _config([*(overrides or []), *setting.overrides], path)
    h, w = decs[0].raw.shape
    os.sync()  # the disk has what came before: each setting starts on an empty write-back
    sink = ThreadedSink(make_sink(path, cfg.output, version="bench", run_id=None, resume=None),
                        maxsize=cfg.engine.sink_queue, name=setting.format, max_bytes=cfg.engine.sink_queue_mib << 20)
    sink.setup(RunInfo(shape=(h, w), dtype=str(decs[0].raw.dtype.str), lags=tuple(cfg.model.lags), source="bench",
                       config_json=cfg.to_json(), components=False))
    n, nbytes = 0, 0
    t0 = time.perf_counter()
    for r in decs:
        sink.append(r)
        n += 1
        nbytes += r.nbytes
        if time.perf_counter() - t0 > budget_s:
            break
    sink.close()
    t_closed = time.perf_counter() - t0
    os.sync()
    t_disk = time.perf_counter() - t0
    disk = _size_on_disk(Path(path))
    return {"setting": setting, "frames": n, "fps": n / t_closed, "mb_s": nbytes / t_closed / 1e6,
            "fps_disk": n / t_disk, "mb_s_disk": nbytes / t_disk / 1e6, "disk_per_frame": disk / n,
            "array_per_frame": nbytes / n}


def live_check(size: int, fps: float, frames: int, overrides: list[str], setting: SinkSetting) -> dict:
    """A live run (the live policy, frames arriving at ``fps``) writing ``setting``'s output."""
    from .speed import CyclingMovie, _engine_run

    with tempfile.TemporaryDirectory() as tmp:
        os.sync()
        r = _engine_run(CyclingMovie(size, frames), [*overrides, *LIVE, *setting.overrides], fps=fps,
                        path=str(Path(tmp) / f"live{setting.suffix}"))
    r["fps_in"] = fps
    r["setting"] = setting
    return r


def measure_sinks(size: int, overrides: list[str], sink_frames: int, live_frames: int) -> dict:
    """The sink table at one size (run in a fresh process); with ``live_frames``, live runs at
    the engine's rate with the default sink and the fastest one to the disk of those that write
    past the page cache (whose rate does not hang on the memory the page cache can take)."""
    from .speed import CyclingMovie

    keep = frames_at(size, sink_frames)
    total = keep + max(60, keep)
    engine_fps, decs = _capture(CyclingMovie(size, total), overrides, keep, total)
    res: dict = {"size": size, "engine_fps": engine_fps, "machine": machine(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for s in settings():
            res["rows"].append(write_rate(decs, s, tmp, overrides))
    del decs
    if live_frames:
        direct = [r for r in res["rows"] if not r["setting"].page_cache] or res["rows"]
        best = max(direct, key=lambda r: r["fps_disk"])["setting"]
        res["live"] = [live_check(size, round(engine_fps, 1), live_frames, overrides, s)
                       for s in dict.fromkeys([settings()[0], best])]
    return res


def run_sinks(sizes: list[int], overrides: list[str], sink_frames: int = SINK_FRAMES, live_frames: int = 200,
              write: bool = True, path: str = "BENCHMARKS.md", readme: str = "README.md", cmd: str = "") -> str:
    """The sink table at every size (each in a fresh process; the live runs at the largest),
    written to BENCHMARKS.md's ``sinks`` section and the README's ``sinks-summary``."""
    results = []
    ctx = multiprocessing.get_context("spawn")
    for size in sizes:
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            results.append(pool.submit(measure_sinks, size, overrides, sink_frames,
                                       live_frames if size == max(sizes) else 0).result())
    cmd = cmd or (f"lagsplit bench speed --sinks-only --sizes {','.join(map(str, sizes))} --sink-frames {sink_frames} "
                  f"--frames {live_frames}" + "".join(f" --set {o}" for o in overrides))
    text = sinks_text(results, cmd, sink_frames)
    if write:
        update_section("sinks", text, path)
        if Path(readme).exists() and "<!-- sinks-summary:start -->" in Path(readme).read_text():
            update_section("sinks-summary", sinks_summary(results, cmd), readme)
    return text


def _row(size: int, r: dict, engine_fps: float) -> str:
    return (f"| {size}² | {r['setting'].label} | {r['frames']} | {r['fps']:.1f} /s | {r['mb_s']:.0f} | "
            f"{r['fps_disk']:.1f} /s | {r['mb_s_disk']:.0f} | {r['disk_per_frame'] / 2**20:.1f} MiB | "
            f"{r['disk_per_frame'] / r['array_per_frame']:.2f} | {r['fps'] / engine_fps:.2f} | "
            f"{r['fps_disk'] / engine_fps:.2f} |")


def _live_line(size: int, c: dict) -> str:
    kept = "kept up" if c["dropped"] == 0 else f"dropped {c['dropped']}"
    return (f"| {size}² | {c['setting'].label} | {c['fps_in']:g} /s | {c['processed']} / {c['dropped']} | "
            f"{c['p50']:.0f} / {c['p99']:.0f} ms | {c['tail_s']:.2f} s | {kept} |")


_HEAD = ("| frame | sink, compression, components | frames | frames/s, closed | MB/s, closed | frames/s, on disk "
         "| MB/s, on disk | on disk per frame | on disk / arrays | closed / engine | on disk / engine |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
_LIVE_HEAD = ("| frame | sink, compression, components | rate in (the engine's) | processed / dropped "
              "| latency p50 / p99 | after the last frame | |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- |")


def sinks_text(results: list[dict], cmd: str, sink_frames: int) -> str:
    lines = [
        "## Output path",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {results[0]['machine']}",
        "",
        "Each sink alone, behind its writer thread (`ThreadedSink`) as a run has it, writing the same "
        "decompositions (raw uint16, slow and fast; the engine's own, kept from its last frames) into a "
        f"temporary folder: {sink_frames} frames at 2048 px, more at smaller sizes (by area, at most "
        f"{2 * sink_frames}), fewer where a setting passes {SETTING_BUDGET_S:g} s. Closed: from the first "
        "frame handed over until the sink is closed (HDF5's writes, and OME-Zarr's marked page cache, are then in "
        "the page cache; an OME-Zarr store's image chunks are otherwise on the disk already: `output.direct_io`). "
        "On disk: until `os.sync()` returns as well (each setting starts after one). A page-cache write takes a "
        "page of free memory for each it writes; every setting's files stay until the size's table is done, so "
        "none reuses the pages another freed (on a virtual machine a page that was never used costs more than "
        "one reused), as a run writes into free memory. MB/s: bytes of the frames' arrays (raw, slow and fast "
        "as the engine hands them over, float32), 10^6 a MB. Engine: the engine alone replaying as fast as "
        "possible (networks in use, no training, no file) in the same process, frames after its first "
        f"{SKIP_FIRST}.",
        "",
        "| frame | engine alone |",
        "| --- | ---: |",
        *(f"| {r['size']}² | {r['engine_fps']:.1f} /s |" for r in results),
        "",
        *_HEAD,
    ]
    for res in results:
        lines += [_row(res["size"], r, res["engine_fps"]) for r in res["rows"]]
    live = [res for res in results if res.get("live")]
    if live:
        lines += ["", "Live at the engine's rate: the whole engine, frames arriving at the engine-alone rate "
                  "above, the live policy (`engine.overflow = \"drop\"`, training only in the slack), with the "
                  "default sink and with the one fastest to the disk above of those that write past the page cache (whose "
                  "rate does not hang on the free memory).", "", *_LIVE_HEAD]
        for res in live:
            lines += [_live_line(res["size"], c) for c in res["live"]]
    return "\n".join(lines)


def sinks_summary(results: list[dict], cmd: str) -> str:
    """The README's table: the largest size's sinks, fastest to the disk first, and its live runs."""
    res = results[-1]
    rows = sorted(res["rows"], key=lambda r: -r["fps_disk"])
    lines = [f"Measured by `{cmd}` on {res['machine']} (details in BENCHMARKS.md, \"Output path\"); "
             f"at {res['size']}x{res['size']} the engine alone processes {res['engine_fps']:.1f} frames/s:", "",
             "| sink, compression, components | frames/s to the disk | MB/s | frames/s until closed "
             "| on disk per frame |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['setting'].label} | {r['fps_disk']:.1f} /s | {r['mb_s_disk']:.0f} | {r['fps']:.1f} /s | "
              f"{r['disk_per_frame'] / 2**20:.1f} MiB |" for r in rows]
    if res.get("live"):
        lines += ["", f"Live at {res['size']}x{res['size']}, frames arriving at the engine's rate:", "", *_LIVE_HEAD]
        lines += [_live_line(res["size"], c) for c in res["live"]]
    return "\n".join(lines)
