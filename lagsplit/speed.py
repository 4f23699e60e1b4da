"""``lagsplit bench speed``: does the engine keep up with a camera, and what does it hold in memory.

Each frame size runs in a fresh process (so its peak RSS is its own), with the default
configuration, on a uint16 movie of a static sample, moving spots and shot noise. In one
process and one go, interleaved where it matters, because this machine is shared and noisy:

(a) inference only: the engine replaying as fast as possible, networks in use, no training;
(b) inference with training: the same with the default training (at least
    ``train.min_steps_per_frame`` steps per frame, however little slack there is);
(c) live: the whole engine with the HDF5 sink, frames arriving at a camera rate, with the
    live policy (``overflow = "drop"``, training only in the slack) and the default latency
    bound: latency p50 / p99, dropped frames, frames on which work was shed, frames until
    the networks are in use, the time from the last frame to the end of the run; up to
    512 px once more with the per-lag components written;
each in both precisions where the CPU computes bfloat16 natively (``model.precision``
'auto' would pick bfloat16 there; float32 is what an AVX2 CPU computes in);
and beside them OpenCV MOG2, a causal 16-frame running median and the HDF5 sink alone
(the same bytes, the ceiling of the output path) on the same frames, as ratios.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lagsplit.engine.nets import precision_label

from .benchmarks_md import cpu_isa, machine, update_section
from .environ import environ
from .sink_speed import SINK_MIN_SIZE, run_sinks

LIVE_FPS = 20.0  # the camera rate of the live run at sizes up to 512 px
COMPONENTS_LIVE_MAX = 512  # sizes up to this also get a live run with the components written
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # --isa avx2: this CPU as an AVX2 one
DISTINCT = 24  # distinct frames the movie cycles through (the memory stays that of 24 frames)


class CyclingMovie:
    """A (T, H, W) uint16 movie read frame by frame: a static sample with fine structure, a
    few spots moving across it, Poisson noise; ``DISTINCT`` noisy frames, cycled."""

    def __init__(self, size: int, frames: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        sample = 200 + 150 * np.sin(7 * yy + 3 * xx) ** 2
        sample[:, size // 3 :: max(8, size // 16)] += 300  # 1-px lines
        self._frames = []
        for t in range(DISTINCT):
            frame = sample.copy()
            for k in range(8):
                cy = int((0.1 + 0.1 * k) * size + 3 * t) % size
                cx = int((0.9 - 0.1 * k) * size + 5 * t) % size
                frame[max(0, cy - 2) : cy + 3, max(0, cx - 2) : cx + 3] += 800
            self._frames.append(rng.poisson(frame).astype(np.uint16))
        self.shape = (frames, size, size)
        self.dtype = np.dtype(np.uint16)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        return self._frames[i % DISTINCT]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
    except OSError:
        return float("nan")


def _config(overrides: list[str], path: str | None):
    from .config import load_config

    sets = [*overrides, "monitor.mode=off", f"output.path={path or ''}", "output.overwrite=true"]
    return load_config(overrides=sets)


def _engine_run(movie, overrides: list[str], *, fps: float = 0.0, path: str | None = None,
                warm: bool = False, rss_every: int = 0) -> dict:
    """One run of the real engine (built as the CLI builds it) over ``movie``."""
    from lagsplit.adapters.synthetic import ArrayStream

    from .app import build_run

    cfg = _config(overrides, path)
    stream = ArrayStream(movie, fps=fps, name="bench")
    rss: list[tuple[int, float]] = []
    sent = {"t": 0.0}

    class Probe:  # a sink that samples memory, and notes when the last frame was emitted
        def setup(self, info): ...
        def skip(self, first, count, reason): ...
        def close(self): ...

        def append(self, r):
            if rss_every and r.index % rss_every == 0:
                rss.append((r.index, _rss_mib()))
            sent["t"] = time.perf_counter()  # the last components out (the last frame's, unless it was dropped)

    run = build_run(cfg, adapter=stream, extra_sinks=[Probe()])
    if warm:  # the steady state: networks in use from the first frame they can be
        run.cascade.stage_steps = [run.cascade.warmup_steps] * len(run.cascade.lags)
    first_net: dict = {"row": None}
    t0 = time.perf_counter()
    st = run.engine.run()
    t1 = time.perf_counter()
    if path:
        from .run_file import open_run

        with open_run(path) as f:  # an .h5 file or an .ome.zarr store
            warmup = f["frames/warmup"][:]
            lat = f["frames/latency_ms"][:]
            idx = np.flatnonzero(warmup == 0)
            first_net["row"] = int(idx[0]) if len(idx) else None
            p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if len(lat) else (0.0, 0.0)
    else:
        p50, p99 = st.latency_p50_ms, st.latency_p99_ms
    return {"fps": st.processed / (t1 - t0), "processed": st.processed, "dropped": st.dropped,
            "shed": {"train": st.shed_train, "components": st.shed_components, "preview": st.shed_preview},
            "steps": st.train_steps, "p50": p50, "p99": p99, "first_net": first_net["row"],
            "tail_s": t1 - sent["t"] if sent["t"] else float("nan"), "rss": rss, "state": st.state.value}


def _baselines(movie, frames: int) -> dict:
    """OpenCV MOG2, a causal 16-frame running median and the HDF5 sink alone on the same frames."""
    import cv2

    out: dict = {}
    mog = cv2.createBackgroundSubtractorMOG2(history=100, varThreshold=16, detectShadows=False)
    t = time.perf_counter()
    for i in range(frames):
        mog.apply(movie[i])
    out["mog2_fps"] = frames / (time.perf_counter() - t)

    h, w = movie.shape[1:]
    ring = np.zeros((16, h, w), np.float32)
    n = min(frames, 48)
    t = time.perf_counter()
    for i in range(n):
        ring[i % 16] = movie[i]
        slow = np.median(ring[: min(i + 1, 16)], axis=0)
        _ = movie[i].astype(np.float32) - slow
    out["median_fps"] = n / (time.perf_counter() - t)

    from lagsplit.engine.config import OutputConfig
    from lagsplit.engine.contracts import RunInfo
    from lagsplit.engine.frame import Decomposition
    from lagsplit.engine.hdf5_sink import HDF5Sink

    with tempfile.TemporaryDirectory() as tmp:
        p = str(Path(tmp) / "sink.h5")
        sink = HDF5Sink(p, OutputConfig(path=p, overwrite=True))
        sink.setup(RunInfo(shape=(h, w), dtype="<u2", lags=(8,), source="bench", config_json="{}", components=False))
        slow = np.full((h, w), 100.0, np.float32)
        n = min(frames, 60)
        t = time.perf_counter()
        for i in range(n):
            raw = movie[i]
            sink.append(Decomposition(index=i, timestamp=float(i), raw=raw, slow=slow, fast=raw - slow,
                                      components=None, residual=None, model_version=0, warmup=False,
                                      latency_ms=0.0))
        sink.close()
        out["hdf5_fps"] = n / (time.perf_counter() - t)
    return out


def _profile(size: int, overrides: list[str]) -> dict:
    """Per-frame ms of the parts of the path: the slow stage on the working grid, the
    full-resolution work around it, one training step."""
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.trainer import OnlineTrainer

    cfg = _config(overrides, None)
    movie = CyclingMovie(size, 1)
    c = Cascade(cfg.model, cfg.train.history, warmup_steps=0)
    tr = OnlineTrainer(c, cfg.train)
    frames = [torch.from_numpy(movie[i].astype(np.float32)).to(c.device) for i in range(DISTINCT)]
    n_fill = max(cfg.model.windows) + 8
    for i in range(n_fill):
        c.infer(frames[i % DISTINCT])
    work = [torch.nn.functional.avg_pool2d(f[None, None], c.factor, ceil_mode=True)[0, 0] for f in frames[:4]]
    cw = Cascade(cfg.model.model_copy(update={"work_size": 0}), cfg.train.history, warmup_steps=0)
    for i in range(n_fill):
        cw.infer(work[i % 4])
    samples: dict[str, list[float]] = {"infer": [], "work": [], "step": []}
    for i in range(12):
        t = time.perf_counter()
        out = c.infer(frames[i % DISTINCT])
        c.to_adu(out, movie[i], False)
        samples["infer"].append(time.perf_counter() - t)
        t = time.perf_counter()
        cw.infer(work[i % 4])
        if cw.device.type == "cuda":
            torch.cuda.synchronize(cw.device)  # the GPU's work done, not just queued
        samples["work"].append(time.perf_counter() - t)
        t = time.perf_counter()
        tr.step()
        samples["step"].append(time.perf_counter() - t)
    ms = {k: 1000 * statistics.median(v) for k, v in samples.items()}
    ms["full_res"] = max(0.0, ms["infer"] - ms["work"])
    ms["factor"] = c.factor
    return ms


def precisions(overrides: list[str]) -> list[str]:
    """The precisions to measure: both where ``model.precision`` is 'auto' and the device
    computes bfloat16 natively (bfloat16 first, what 'auto' picks), else the one it resolves to."""
    m = _config(overrides, None).model
    picked = precision_label(m.precision, m.device)
    return ["bfloat16", "float32"] if m.precision == "auto" and picked == "bfloat16" else [picked]


def measure_size(size: int, frames: int, overrides: list[str], live_fps: float | None, soak: int) -> dict:
    """Everything for one frame size (run in a fresh process), in each of ``precisions``."""
    movie = CyclingMovie(size, frames)
    res: dict = {"size": size, "frames": frames, "isa": cpu_isa(), "machine": machine()}
    res.update(_baselines(movie, frames))
    fps = live_fps or (LIVE_FPS if size <= 512 else round(res["mog2_fps"] / 2, 1))
    live = ["engine.overflow=drop", "train.min_steps_per_frame=0"]
    res["runs"] = []
    for prec in precisions(overrides):
        o = [*overrides, f"model.precision={prec}"]
        r: dict = {"precision": prec, "profile": _profile(size, o)}
        r["a"] = _engine_run(movie, [*o, "train.mode=off"], warm=True)
        r["b"] = _engine_run(movie, o, warm=True)
        with tempfile.TemporaryDirectory() as tmp:
            # the file's writes go through the page cache: each live run starts with nothing
            # that the runs before it wrote still waiting to go to the disk (the HDF5 baseline
            # alone leaves up to 2.4 GB), so that it is not held back by their write-back
            os.sync()
            r["c"] = _engine_run(movie, [*o, *live], fps=fps, path=str(Path(tmp) / "live.h5"))
            r["c"]["fps_in"] = fps
            if size <= COMPONENTS_LIVE_MAX:
                os.sync()
                r["cc"] = _engine_run(movie, [*o, *live, "output.components=true"], fps=fps,
                                      path=str(Path(tmp) / "live_components.h5"))
                r["cc"]["fps_in"] = fps
        res["runs"].append(r)
    if soak:  # the engine's memory over a long run (no file: 2,000 frames of 2048x2048 are 80 GB)
        res["soak"] = _engine_run(CyclingMovie(size, soak), overrides, warm=True, rss_every=max(1, soak // 20))
    res["peak_rss_mib"] = _peak_rss_mib()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        res["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    res["torch_threads"] = torch.get_num_threads()
    return res


def _limit(p: dict, hdf5_ms: float) -> str:
    parts = {
        f"the slow stage on the {p['factor']}x-binned working grid (statistics, network)": p["work"],
        "full-resolution work (conversion, binning, fine detail, upsampling)": p["full_res"],
        "training steps": p["step"],
        "HDF5 writes": hdf5_ms,
    }
    name = max(parts, key=parts.get)
    shares = ", ".join(f"{k.split(' (')[0]} {v:.0f} ms" for k, v in parts.items())
    return f"{name} ({shares} per frame)"


def run_speed(sizes: list[int], frames: int, overrides: list[str], live_fps: float | None = None, soak: int = 0,
              write: bool = True, path: str = "BENCHMARKS.md", readme: str = "README.md", isa: str = "",
              startup: bool = True) -> str:
    """Measure every size (each in a fresh process; ``isa`` "avx2": with torch and oneDNN held
    to AVX2, as on a CPU without AVX-512 or native bfloat16) and write the tables; with
    ``startup`` (and no ``isa``), a replay's start-up too (lagsplit/startup.py)."""
    if isa not in ("", "avx2"):
        raise ValueError(f"--isa {isa!r}: only 'avx2' can be emulated")
    results = []
    ctx = multiprocessing.get_context("spawn")
    with environ(AVX2_ENV if isa else {}):  # read by the spawned processes as torch loads
        for size in sizes:  # the long run at the largest size only
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                results.append(pool.submit(measure_size, size, frames, overrides, live_fps,
                                           soak if size == max(sizes) else 0).result())
    cmd = f"lagsplit bench speed --sizes {','.join(map(str, sizes))} --frames {frames}"
    cmd += "".join(f" --set {o}" for o in overrides) + (f" --fps {live_fps:g}" if live_fps else "")
    cmd += (f" --soak {soak}" if soak else "") + (f" --isa {isa}" if isa else "")
    cfg = _config(overrides, None)
    m, t = cfg.model, cfg.train
    lines = [
        "## Speed" + (" on an AVX2 CPU" if isa else ""),
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {results[0]['machine']}, torch threads {results[0]['torch_threads']}  ",
        f"Configuration: the default (lags {list(m.lags)}, slow stage on a grid of at most {m.work_size} px a side, "
        f"windows {list(m.windows)}, U-Net {m.base_channels} channels x {m.levels} levels, training batch "
        f"{t.batch} x {t.crop} px, at least {t.min_steps_per_frame} step(s) per frame in (b), latency bound "
        f"{cfg.engine.max_latency_ms:g} ms in (c)); networks in each precision the CPU computes natively "
        f"(`model.precision`); uint16 frames, {frames} per run.",
        "",
        "Throughput, replaying as fast as possible (networks in use from the first frame they can be):",
        "",
        "| frame | precision | (a) inference | (b) + training | Mpx/s (b) | OpenCV MOG2 | (b) / MOG2 "
        "| running median (16) | (b) / median | HDF5 sink alone | (b) / HDF5 | peak RSS |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    gpu = any("peak_gpu_mib" in r for r in results)
    if gpu:  # a CUDA run: the device's peak memory too
        lines[-2] += " peak GPU memory |"
        lines[-1] += " ---: |"
    for r in results:
        for run in r["runs"]:
            a, b = run["a"], run["b"]
            mpx = b["fps"] * r["size"] ** 2 / 1e6
            lines.append(
                f"| {r['size']}² | {run['precision']} | {a['fps']:.1f} /s | {b['fps']:.1f} /s | {mpx:.1f} | "
                f"{r['mog2_fps']:.1f} /s | {b['fps'] / r['mog2_fps']:.2f} | {r['median_fps']:.1f} /s | "
                f"{b['fps'] / r['median_fps']:.2f} | {r['hdf5_fps']:.1f} /s | {b['fps'] / r['hdf5_fps']:.2f} | "
                f"{r['peak_rss_mib'] / 1024:.2f} GiB |"
                + (f" {r.get('peak_gpu_mib', float('nan')) / 1024:.2f} GiB |" if gpu else ""))
    lines += [
        "",
        "Live (c): the engine with the HDF5 sink, frames arriving at the rate shown (20 frames/s up to 512 px, "
        "half of MOG2's rate above), `engine.overflow = \"drop\"`, training only in the slack, warm-up "
        "included; up to 512 px once more with the per-lag components written. Latency: frame arrival to "
        "components ready. Shed: frames on which the engine skipped optional work to hold its latency bound "
        "(training steps / component stages / previews). Networks in use: the first row not in warm-up. After "
        "the last frame: from the last components out (the last frame's, unless it was dropped) to the end of "
        "the run (file closed). The file's writes go through the page cache; each live run starts once the "
        "disk has taken what the runs before it wrote (`os.sync()`), and a run that writes more than the cache "
        "holds is held to the disk's own rate.",
        "",
        "| frame | precision | components | rate in | processed | dropped | latency p50 | latency p99 | shed "
        "| networks in use from row | training steps | after the last frame |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for run in r["runs"]:
            for key, comps in (("c", "off"), ("cc", "on")):
                if key in run:
                    lines.append(_live_row(f"{r['size']}²", run["precision"], comps, run[key]))
    lines += ["", "What limits each size (per-frame profile of the same configuration):", ""]
    for r in results:
        for run in r["runs"]:
            lines.append(f"- {r['size']}², {run['precision']}: {_limit(run['profile'], 1000 / r['hdf5_fps'])}")
    soaks = [r for r in results if "soak" in r]
    if soaks:
        lines += ["", f"Memory over a long run ({soak} frames as fast as possible, training on, no file), "
                  f"resident memory sampled every {soak // 20} frames: its range over the first half after "
                  "warm-up (10-50 % of the frames) and over the second half; growth: from the highest sample of "
                  "the first to the highest of the second (the samples move with the frames queued at that moment).",
                  "", "| frame | RSS, 10-50 % | RSS, 50-100 % | growth | peak RSS |", "| --- | ---: | ---: | ---: | ---: |"]
        for r in soaks:
            first, second = _halves(r["soak"]["rss"], soak)
            lines.append(f"| {r['size']}² | {_span(first)} | {_span(second)} | {max(second) - max(first):+.0f} MiB | "
                         f"{r['peak_rss_mib'] / 1024:.2f} GiB |" if first and second else
                         f"| {r['size']}² | - | - | - | {r['peak_rss_mib'] / 1024:.2f} GiB |")
    text = "\n".join(lines)
    if write:
        section = "speed-avx2" if isa else "speed"
        update_section(section, text, path)
        if Path(readme).exists() and f"<!-- {section}-summary:start -->" in Path(readme).read_text():
            update_section(f"{section}-summary", _summary(results, cmd), readme)
    sink_sizes = [s for s in sizes if s >= SINK_MIN_SIZE]
    if sink_sizes and not isa:  # the output path's own table, at the same sizes, in its own section
        text += "\n\n" + run_sinks(sink_sizes, overrides, live_frames=frames, write=write, path=path, readme=readme,
                                   cmd=cmd)
    if startup and not isa:
        from .startup import run_startup

        text += "\n\n" + run_startup(cmd, write=write, path=path, readme=readme)
    return text


def _live_row(frame: str, precision: str, components: str, c: dict) -> str:
    return (f"| {frame} | {precision} | {components} | {c['fps_in']:g} /s | {c['processed']} | {c['dropped']} | "
            f"{c['p50']:.0f} ms | {c['p99']:.0f} ms | {_shed_cell(c)} | {_first_net(c)} | {c['steps']} | "
            f"{c['tail_s']:.2f} s |")


def _shed_cell(c: dict) -> str:
    """A live run's frames shed, "training / components / previews"."""
    return " / ".join(str(c["shed"][p]) for p in ("train", "components", "preview"))


def _first_net(c: dict) -> str:
    """The first row a live run used its networks on ("never" when it did not)."""
    return "never" if c["first_net"] is None else str(c["first_net"])


def _halves(rss: list[tuple[int, float]], frames: int) -> tuple[list[float], list[float]]:
    """The memory samples from 10 % to 50 % of the frames, and from 50 % on."""
    return ([m for i, m in rss if frames // 10 <= i < frames // 2], [m for i, m in rss if i >= frames // 2])


def _span(samples: list[float]) -> str:
    return f"{min(samples):.0f}-{max(samples):.0f} MiB"


def _summary(results: list[dict], cmd: str) -> str:
    """The README's short table: what this machine keeps up with, in each precision."""
    lines = [f"Measured by `{cmd}` on {results[0]['machine']} (details in BENCHMARKS.md):", "",
             "| frame | precision | live rate tried | processed / dropped | latency p50 / p99 | frames shed "
             "(training / components / previews) | networks in use from frame | as fast as possible, training on "
             "| OpenCV MOG2 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        for run in r["runs"]:
            c = run["c"]
            lines.append(f"| {r['size']}x{r['size']} | {run['precision']} | {c['fps_in']:g} /s | "
                         f"{c['processed']} / {c['dropped']} | {c['p50']:.0f} / {c['p99']:.0f} ms | "
                         f"{_shed_cell(c)} | {_first_net(c)} | {run['b']['fps']:.1f} /s | {r['mog2_fps']:.1f} /s |")
    return "\n".join(lines)
