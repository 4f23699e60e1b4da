"""``lagsplit bench speed``: how fast the engine decomposes and trains, and what it holds in memory.

Everything is measured in one run, interleaved, and reported as ratios beside the
absolute numbers, because this machine is shared and noisy.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig, OutputConfig, RuntimeConfig, TrainConfig
from lagsplit.engine.engine import Engine
from lagsplit.engine.hdf5_sink import HDF5Sink
from lagsplit.engine.threaded_sink import ThreadedSink
from lagsplit.engine.trainer import OnlineTrainer

from .benchmarks_md import machine, update_section


def _rss_mib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096 / 2**20
    except OSError:
        return float("nan")


def _movie(size: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 60, (size, size))
    return rng.poisson(base, (frames, size, size)).astype(np.uint16)


def _time_ms(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def kernel_numbers(size: int, repeat: int, model: ModelConfig, train: TrainConfig) -> dict:
    """Per-frame inference (network and warm-up paths), the window statistics alone (as
    run: bounds re-sorted every n // 16 frames; and re-sorted every frame), and one
    training step, in ms."""
    # enough frames to fill the longest window, so the steady state is what is timed
    movie = _movie(size, max(model.lags[0] + train.history, max(model.windows, default=0)) + 16)
    c = Cascade(model, train.history, warmup_steps=0)
    tr = OnlineTrainer(c, train)
    tr_all = OnlineTrainer(c, train.model_copy(update={"stages_per_step": "all"}))
    frames = [torch.from_numpy(f.astype(np.float32)) for f in movie]
    for f in frames:
        c.infer(f)
    c.stage_steps = [1] * len(c.lags)
    i = iter(range(10**9))

    def infer_net():
        f = frames[next(i) % len(frames)]
        out = c.infer(f)
        c.to_adu(out, movie[0], False)

    def infer_median():
        saved = c.stage_steps
        c.stage_steps = [0] * len(c.lags)
        c.warmup_steps = 1
        out = c.infer(frames[next(i) % len(frames)])
        c.to_adu(out, movie[0], False)
        c.stage_steps, c.warmup_steps = saved, 0

    def features_cached():
        c.features.update(c.ring.count - 1)

    def features_sorted():
        c.features.reset()  # forget the bounds: sort the windows again
        c.features.update(c.ring.count - 1)

    infer_net()
    tr.step()
    res = {"size": size}
    # interleave the measurements so drifting machine load hits them alike
    net, med, rot, all_, fc, fs = [], [], [], [], [], []
    for _ in range(repeat):
        net.append(_time_ms(infer_net, 1))
        med.append(_time_ms(infer_median, 1))
        rot.append(_time_ms(tr.step, 1))
        all_.append(_time_ms(tr_all.step, 1))
        fc.append(_time_ms(features_cached, 1))
        fs.append(_time_ms(features_sorted, 1))
    res.update(feat_ms=statistics.median(fc), feat_sort_ms=statistics.median(fs))
    res.update(infer_ms=statistics.median(net), median_ms=statistics.median(med),
               step_rotate_ms=statistics.median(rot), step_all_ms=statistics.median(all_),
               ring_mib=c.ring.data.numel() * 4 / 2**20)
    return res


def engine_numbers(size: int, frames: int, model: ModelConfig, train: TrainConfig) -> dict:
    """End-to-end frames/s through the threaded engine: training off / 1 step per frame, with and without HDF5."""
    movie = _movie(size, frames)
    out: dict = {"size": size, "frames": frames}
    with tempfile.TemporaryDirectory() as tmp:
        for label, mode, write in (("off_nofile", "off", False), ("off_hdf5", "off", True),
                                   ("fixed1_hdf5", "fixed", True)):
            c = Cascade(model, train.history, warmup_steps=0)
            tcfg = train.model_copy(update={"mode": mode, "steps_per_frame": 1, "warmup_steps": 0})
            sinks = []
            if write:
                p = Path(tmp) / f"{label}.h5"
                sinks.append(ThreadedSink(HDF5Sink(p, OutputConfig(path=str(p))), maxsize=64))
            c.stage_steps = [1] * len(c.lags)  # use the networks from the first frame: the steady-state cost
            rss = []

            class _Probe:
                def setup(self, info): ...
                def skip(self, *a): ...
                def close(self): ...
                def append(self, r, rss=rss):
                    if r.index in (frames // 4, frames - 1):
                        rss.append(_rss_mib())

            eng = Engine(ArrayStream(movie), c, OnlineTrainer(c, tcfg), [*sinks, _Probe()],
                         runtime=RuntimeConfig(queue=16, overflow="block"))
            t = time.perf_counter()
            st = eng.run()
            dt = time.perf_counter() - t
            out[f"{label}_fps"] = st.processed / dt
            out[f"{label}_p50_ms"] = st.latency_p50_ms
            if label == "fixed1_hdf5":
                out["rss_growth_mib"] = rss[-1] - rss[0] if len(rss) == 2 else float("nan")
    return out


def run_speed(sizes: list[int], frames: int, repeat: int, threads: int, write: bool, path: str = "BENCHMARKS.md") -> str:
    if threads:
        torch.set_num_threads(threads)
    model = ModelConfig(device="cpu")
    train = TrainConfig(mode="fixed")
    kernels = [kernel_numbers(s, repeat, model, train) for s in sizes]
    engines = [engine_numbers(s, frames, model, train) for s in sizes]
    cmd = f"lagsplit bench speed --sizes {','.join(map(str, sizes))} --frames {frames} --repeat {repeat}" + (
        f" --threads {threads}" if threads else "")
    lines = [
        "## Speed (CPU)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {machine()}  ",
        f"Model: lags {list(model.lags)}, U-Net base {model.base_channels} channels, {model.levels} levels; "
        f"training batch {train.batch} crops of {train.crop} px; window statistics {model.statistic} over "
        f"{list(model.windows)} frames.",
        "",
        "Per frame (median of the interleaved repeats):",
        "",
        "| frame | inference, 4 lags (ms) | warm-up path (ms) | window statistics (ms) | same, sorting every frame (ms) | sorting / as run | train step, slow + 1 lag (ms) | train step, all lags (ms) | all / rotate | ring (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in kernels:
        lines.append(f"| {k['size']}² | {k['infer_ms']:.1f} | {k['median_ms']:.1f} | {k['feat_ms']:.1f} | "
                     f"{k['feat_sort_ms']:.1f} | {k['feat_sort_ms'] / k['feat_ms']:.2f}x | {k['step_rotate_ms']:.1f} | "
                     f"{k['step_all_ms']:.1f} | {k['step_all_ms'] / k['step_rotate_ms']:.2f} | {k['ring_mib']:.1f} |")
    lines += [
        "",
        f"Through the threaded engine ({frames} frames replayed as fast as possible, block policy):",
        "",
        "| frame | frames/s, no training, no file | + HDF5 file | + 1 training step per frame | HDF5 cost (ratio) | training cost (ratio) | latency p50, training (ms) | RSS growth in steady state (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in engines:
        lines.append(
            f"| {e['size']}² | {e['off_nofile_fps']:.1f} | {e['off_hdf5_fps']:.1f} | {e['fixed1_hdf5_fps']:.1f} | "
            f"{e['off_nofile_fps'] / e['off_hdf5_fps']:.2f}x | {e['off_hdf5_fps'] / e['fixed1_hdf5_fps']:.2f}x | "
            f"{e['fixed1_hdf5_p50_ms']:.0f} | {e['rss_growth_mib']:.1f} |")
    lines += ["", "Latency is frame arrival to components ready; with block policy a replay queues frames, so it includes queueing."]
    text = "\n".join(lines)
    if write:
        update_section("speed", text, path)
    return text
