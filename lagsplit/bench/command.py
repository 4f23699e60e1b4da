"""What ``lagsplit bench quality`` does: run the scenes (and the real recordings), print
the table, and rewrite the quality section of the report (at a ``--size`` other than 128,
that size's own section, ``quality<size>``); with ``--levers``, run the levers instead and
rewrite the levers section (``levers<size>`` at another size)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rich.console import Console

from ..config import parse_overrides
from .engine_method import bench_config
from .levers import load_levers, run_levers
from .quality import lagsplit_overrides, run_quality
from .report import levers_markdown, quality_markdown, write_levers, write_section

MIN_SIZE = 32
"""The smallest frame side (px) the scenes are generated at."""


def _command_line(quick: bool, levers: bool, size: int = 128) -> str:
    if sys.argv[1:2] == ["bench"]:
        return "lagsplit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return ("lagsplit bench quality" + (" --levers" if levers else "") + (" --quick" if quick else "") +
            (f" --size {size}" if size != 128 else ""))


def bench_quality_command(*, quick: bool, out_dir: Path, scenes: list[str] | None, steps: int, frames: int,
                          size: int, seed: int, recordings: bool, report: Path | None, init: str | None,
                          sets: list[str], console: Console, out: Console, levers: Path | None = None) -> Path:
    """``levers``: the levers file to run instead of the quality table (None: the table).
    Settings, scenes and levers are all checked before anything runs."""
    from lagsplit.adapters.scenes import SCENES

    unknown = [s for s in scenes or [] if s not in SCENES]
    if unknown:
        raise ValueError(f"unknown scene(s) {', '.join(unknown)}; known: {', '.join(SCENES)}")
    if size < MIN_SIZE:
        raise ValueError(f"--size {size}: the scenes need frames of at least {MIN_SIZE} px a side")
    overrides = parse_overrides(sets)
    bench_config(lagsplit_overrides(frames, steps, overrides), init=init)
    path = report if report is not None else (Path(out_dir) / "BENCHMARKS.md" if quick else Path("BENCHMARKS.md"))
    if levers is not None:
        chosen = load_levers(levers)
        lrun = run_levers(chosen, scenes, frames=frames, size=size, seed=seed, steps=steps, quick=quick,
                          overrides=overrides, init=init, log=console.print)
        lrun.command = _command_line(quick, True, size)
        lrun.source = Path(levers).as_posix()
        text = levers_markdown(lrun)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_levers(path, text, lrun.section)
        out.print(text, soft_wrap=True, markup=False, highlight=False)
        console.print(f"wrote the {lrun.section} section of {path}")
        return path
    run = run_quality(scenes, frames=frames, size=size, seed=seed, steps=steps, quick=quick, out_dir=out_dir,
                      overrides=overrides, init=init, log=console.print)
    run.command = _command_line(quick, False, size)
    rec_md = ""
    if recordings and run.section == "quality":  # the recordings belong with the 128 px table
        from .recordings import recordings_markdown, run_recordings

        rec_md = recordings_markdown(run_recordings(out_dir, steps=steps, log=console.print))
    text = quality_markdown(run, rec_md)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_section(path, text, run.section)
    out.print(text, soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote the {run.section} section of {path} and {len([r for r in run.scenes if r.figure])} figure(s) in {out_dir}")
    return path
