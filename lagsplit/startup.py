"""``lagsplit bench speed``'s start-up measurement: how long after the command starts a
replay's first frame is processed, with the command run as a user runs it (a fresh
``python -m lagsplit replay`` process each time).

A run's output records ``startup_s``, seconds from the command's first module
(``lagsplit.entry``) to its first frame's arrival at the engine, and ``/frames/latency_ms``
the frame's own processing; the interpreter's launch before that module is timed apart
(``python -c "import lagsplit.entry"``, which also pays for the interpreter's exit).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from .benchmarks_md import machine, update_section

SIZE, FRAMES, RUNS = 512, 10, 5


def _replay(stack: Path, out: Path) -> dict:
    """One replay of ``stack`` in a fresh process: seconds to its first frame processed
    (from lagsplit's first module), and from the process's launch to its exit."""
    cmd = [sys.executable, "-m", "lagsplit", "replay", str(stack), "--out", str(out), "--overwrite",
           "--set", "monitor.mode=off"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    total = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    with h5py.File(out, "r") as f:
        first = float(f.attrs["startup_s"]) + float(f["frames/latency_ms"][0]) / 1000
        frames = int(f["frames/index"].shape[0])
    return {"first_frame_s": first, "total_s": total, "frames": frames}


def _launch() -> float:
    """Seconds for the interpreter to start, import ``lagsplit.entry`` and exit."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import lagsplit.entry"], check=True)
    return time.perf_counter() - t


def measure_startup(size: int = SIZE, frames: int = FRAMES, runs: int = RUNS) -> dict:
    """The medians over ``runs`` replays of a ``frames`` x ``size`` x ``size`` uint16 stack."""
    from .speed import CyclingMovie

    movie = CyclingMovie(size, frames)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.npy"
        np.save(stack, np.stack([movie[i] for i in range(frames)]))
        samples = [_replay(stack, Path(tmp) / "out.h5") for _ in range(runs)]
        launch = statistics.median(_launch() for _ in range(runs))
    first = statistics.median(s["first_frame_s"] for s in samples)
    return {"size": size, "frames": frames, "runs": runs, "launch_s": launch, "first_frame_s": first,
            "command_first_frame_s": launch + first, "total_s": statistics.median(s["total_s"] for s in samples),
            "written": samples[0]["frames"]}


def startup_text(r: dict, cmd: str) -> tuple[str, str]:
    """The BENCHMARKS.md section and the README's summary line for a measurement."""
    what = (f"`lagsplit replay` of {r['frames']} frames of {r['size']}x{r['size']} uint16 (.npy, the default settings, "
            f"the monitor off)")
    section = "\n".join([
        "## Start-up", "",
        f"Command: `{cmd}`  ", f"Machine: {machine()}", "",
        f"{what}, each run a fresh `python -m lagsplit replay` process; medians of {r['runs']} runs:", "",
        "| | seconds |", "| --- | ---: |",
        f"| interpreter launch, up to lagsplit's first module (`python -c \"import lagsplit.entry\"`, exit "
        f"included) | {r['launch_s']:.2f} |",
        f"| from lagsplit's first module to the first frame processed (the output's `startup_s` + its "
        f"first latency) | {r['first_frame_s']:.2f} |",
        f"| **first frame processed, from the command's start** (the two above) | **{r['command_first_frame_s']:.2f}** |",
        f"| the whole command, launch to exit ({r['written']} frames written) | {r['total_s']:.2f} |",
    ])
    summary = (f"Start-up, measured by `{cmd}` on {machine()}: a {what} processes its first frame "
               f"{r['command_first_frame_s']:.2f} s after the command starts and ends after {r['total_s']:.2f} s "
               f"(medians of {r['runs']} runs; BENCHMARKS.md, \"Start-up\").")
    return section, summary


def run_startup(cmd: str, write: bool = True, path: str = "BENCHMARKS.md", readme: str = "README.md",
                size: int = SIZE, frames: int = FRAMES, runs: int = RUNS) -> str:
    """Measure, and write the "startup" section of ``path`` and the README's
    ``startup-summary`` (where the README has its markers)."""
    r = measure_startup(size, frames, runs)
    section, summary = startup_text(r, cmd)
    if write:
        update_section("startup", section, path)
        if Path(readme).exists() and "<!-- startup-summary:start -->" in Path(readme).read_text():
            update_section("startup-summary", summary, readme)
    return section
