"""``lagsplit bench batch``: what a Dask cluster gives an archive. The same recordings
(quality-bench scenes, saved as .npy) through ``lagsplit replay`` one after another, and
through ``lagsplit batch`` on a local cluster of 1 and 2 workers and on a ``dask
scheduler`` process with 2 ``dask worker`` processes; then one longer scene split into
chunks, scored against its truth at the seams."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lagsplit.adapters.scenes import make_scene
from lagsplit.batch.cluster import SchedulerProcesses, open_cluster
from lagsplit.batch.plan import BATCH_DEFAULTS, BatchRequest
from lagsplit.batch.run import BatchResult, run_batch
from lagsplit.benchmarks_md import machine, update_section
from lagsplit.metrics import frame_errors

SCENES = ("filaments", "brownian", "bleaching", "drift", "dense", "lowlight", "blinking", "fade")
SEAM_FRAMES = 20
"""Frames after each seam whose slow error is compared with the rest."""


@dataclass
class Way:
    label: str
    seconds: float
    task_seconds: float
    start_seconds: float = 0.0
    """Starting the cluster (or the scheduler and worker processes)."""


def _recordings(folder: Path, n: int, frames: int, size: int, seed: int) -> list[Path]:
    paths = []
    for k in range(n):
        scene = make_scene(SCENES[k % len(SCENES)], frames=frames, size=size, seed=seed + k)
        path = folder / f"{k:02d}_{scene.name}.npy"
        np.save(path, scene.movie.astype(np.float32))
        paths.append(path)
    return paths


def _batch_settings() -> list[str]:
    """The batch's defaults as ``--set`` items, so that replay runs what batch runs."""
    return [f"{section}.{key}={value}" for section, values in BATCH_DEFAULTS.items() for key, value in values.items()
            if section != "monitor"]


def _replays(paths: list[Path], out: Path) -> Way:
    t0 = time.perf_counter()
    sets = [item for s in _batch_settings() for item in ("--set", s)]
    for p in paths:
        subprocess.run([sys.executable, "-m", "lagsplit", "replay", str(p), "--out", str(out / f"{p.stem}.h5"),
                        *sets, "--set", "monitor.mode=off"], check=True, capture_output=True)
    return Way("`lagsplit replay`, one after another", time.perf_counter() - t0, 0.0)


def _batched(label: str, paths: list[Path], out: Path, factory, split: int = 1, start_seconds: float = 0.0
             ) -> tuple[Way, BatchResult]:
    t0 = time.perf_counter()
    started = {}

    def timed_factory():
        s = time.perf_counter()
        cluster = factory()
        started["s"] = time.perf_counter() - s
        return cluster

    res = run_batch(BatchRequest([str(p) for p in paths], out, split=split), timed_factory, console=None,
                    progress=False)
    bad = [r for r in res.rows if r.status != "ok"]
    if bad:
        raise RuntimeError(f"{label}: {bad[0].recording} {bad[0].status}: {bad[0].error}")
    return Way(label, time.perf_counter() - t0, res.task_seconds, start_seconds + started.get("s", 0.0)), res


def _seams(folder: Path, frames: int, size: int, seed: int, split: int) -> dict:
    """A scene with its truth, split into ``split`` chunks on 2 workers, beside the same
    scene unsplit: slow NRMSE over the SEAM_FRAMES after each seam and over the rest."""
    scene = make_scene("filaments", frames=frames, size=size, seed=seed)
    path = folder / "long_filaments.npy"
    np.save(path, scene.movie.astype(np.float32))
    errs = {}
    for k, n in (("split", split), ("whole", 1)):
        out = folder / f"seams_{k}"
        _batched(k, [path], out, lambda: open_cluster(workers=2), split=n)
        with h5py.File(out / "long_filaments.h5", "r") as f:
            slow = f["slow"][:]
            warm = f["frames/warmup"][:].astype(bool)
            seams = [int(s) for s in f.attrs.get("split_seams", [])] if k == "split" else None
        errs[k] = frame_errors(slow, scene.slow)
        if seams is not None:
            seam_list, warm_split = seams, warm
    after = np.zeros(frames, bool)
    for s in seam_list:
        after[s:s + SEAM_FRAMES] = True
    rest = ~after & ~warm_split

    def rms(e, m):
        return float(np.sqrt(np.mean(e[m] ** 2)))

    return {"seams": seam_list, "after_split": rms(errs["split"], after), "rest_split": rms(errs["split"], rest),
            "after_whole": rms(errs["whole"], after), "rest_whole": rms(errs["whole"], rest),
            "frames": frames, "split": split}


def run_batch_bench(n: int = 8, frames: int = 300, size: int = 128, seed: int = 100, seam_frames: int = 600,
                    split: int = 3, write: bool = True, log=print) -> str:
    cmd = "lagsplit bench batch" + ("" if (n, frames, size) == (8, 300, 128) else
                                    f" --recordings {n} --frames {frames} --size {size}")
    with tempfile.TemporaryDirectory(prefix="lagsplit-bench-batch-") as tmp:
        folder = Path(tmp)
        paths = _recordings(folder, n, frames, size, seed)
        log(f"{n} recordings of {frames} frames at {size} px in {folder}")
        ways: list[Way] = []
        ways.append(_replays(paths, folder / "replay"))
        log(f"replay one after another: {ways[-1].seconds:.1f} s")
        for w in (1, 2):
            way, _ = _batched(f"`lagsplit batch --workers {w}` (local cluster)", paths, folder / f"local{w}",
                              lambda w=w: open_cluster(workers=w))
            ways.append(way)
            log(f"local cluster, {w} worker(s): {way.seconds:.1f} s")
        t0 = time.perf_counter()
        with SchedulerProcesses(workers=2) as procs:
            started = time.perf_counter() - t0
            way, _ = _batched("`lagsplit batch --scheduler ADDRESS` (`dask scheduler` + 2 `dask worker` processes)",
                              paths, folder / "scheduler", lambda: open_cluster(scheduler=procs.address),
                              start_seconds=started)
        ways.append(way)
        log(f"scheduler and 2 worker processes: {way.seconds:.1f} s (+ {started:.1f} s to start them)")
        seams = _seams(folder, seam_frames, size, seed + 50, split)
        log(f"seams: {seams}")
    text = _report(cmd, n, frames, size, seed, ways, seams)
    if write:
        update_section("batch", text)
    return text


def _report(cmd: str, n: int, frames: int, size: int, seed: int, ways: list[Way], seams: dict) -> str:
    one = next(w for w in ways if "--workers 1" in w.label)
    lines = [
        "## Batch on Dask", "",
        f"Measured by `{cmd}` on {machine()}.", "",
        f"{n} recordings ({', '.join(SCENES[:n])}: quality-bench scenes of {frames} frames at {size}x{size} px, "
        f"seeds {seed} and on), each one task with the batch's settings (`train.mode=fixed`, "
        f"one torch thread; `lagsplit replay` is given the same). Time from the command's start to the last "
        f"output, cluster start included.", "",
        "| how | seconds | speed-up over 1 local worker | a task's own time (mean) | cluster start-up | per-task overhead "
        "| overhead / task |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    mean_task = one.task_seconds / n
    two = next(w for w in ways if "--workers 2" in w.label)
    slower = two.task_seconds / one.task_seconds
    for w in ways:
        if w.task_seconds:
            workers = 1 if w is one else 2
            over = (w.seconds - w.start_seconds - w.task_seconds / workers) / (n / workers)
            cells = (f"{w.task_seconds / n:.2f} s | {w.start_seconds:.1f} s | {over:.2f} s | "
                     f"{100 * over / mean_task:.1f} %")
        else:
            cells = "- | - | - | -"
        lines.append(f"| {w.label} | {w.seconds:.1f} | {one.seconds / w.seconds:.2f}x | {cells} |")
    lines += [
        "",
        f"A task's own time on its worker (building the run, replaying {frames} frames, writing the file) is "
        f"{mean_task:.2f} s on average with 1 worker and {two.task_seconds / n:.2f} s with 2 local workers: "
        f"{slower:.2f}x as long while two tasks share the machine, which alone bounds the speed-up of 2 "
        f"workers at {2 / slower:.2f}x. Per-task overhead: the time beyond the tasks' own, "
        f"after the cluster started, per task on each worker: (seconds - start-up - task seconds / workers) / "
        f"(tasks / workers). With 1 worker that is the cluster's overhead alone; with 2, the tasks' own times "
        f"are taken while both cores are busy and a worker may idle while the other runs the last task, so the "
        f"column mixes overhead with that (and can come out below zero).", "",
        f"`--split {seams['split']}` of one {seams['frames']}-frame filaments scene on 2 local workers (seams at "
        f"frames {', '.join(map(str, seams['seams']))}; each chunk first plays 128 frames that are discarded), "
        f"slow NRMSE against the scene's truth:", "",
        f"| run | {SEAM_FRAMES} frames after each seam | every other frame after warm-up | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| split | {seams['after_split']:.4f} | {seams['rest_split']:.4f} | "
        f"{seams['after_split'] / seams['rest_split']:.3f} |",
        f"| whole (the same frames) | {seams['after_whole']:.4f} | {seams['rest_whole']:.4f} | "
        f"{seams['after_whole'] / seams['rest_whole']:.3f} |",
    ]
    return "\n".join(lines)
