"""What ``lagsplit bench quality`` does: run the scenes (and the real recordings), print
the table, and rewrite the quality section of the report."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rich.console import Console

from .quality import run_quality
from .report import quality_markdown, write_section


def _overrides(sets: list[str]) -> dict:
    """``section.field=value`` items as a nested dict (values read as TOML literals)."""
    from ..config import parse_value

    tree: dict = {}
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected section.field=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) != 2:
            raise ValueError(f"--set {item!r}: name section.field, e.g. train.steps_per_frame")
        tree.setdefault(parts[0], {})[parts[1]] = parse_value(value.strip())
    return tree


def bench_quality_command(*, quick: bool, out_dir: Path, scenes: list[str] | None, steps: int, frames: int,
                          size: int, seed: int, recordings: bool, report: Path | None, init: str | None,
                          sets: list[str], console: Console, out: Console) -> Path:
    from lagsplit.adapters.scenes import BENCH_SCENES

    unknown = [s for s in scenes or [] if s not in BENCH_SCENES]
    if unknown:
        raise ValueError(f"unknown scene(s) {', '.join(unknown)}; known: {', '.join(BENCH_SCENES)}")
    overrides = _overrides(sets)
    run = run_quality(scenes, frames=frames, size=size, seed=seed, steps=steps, quick=quick, out_dir=out_dir,
                      overrides=overrides, init=init, log=console.print)
    run.command = "lagsplit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] \
        else "lagsplit bench quality" + (" --quick" if quick else "")
    rec_md = ""
    if recordings:
        from .recordings import recordings_markdown, run_recordings

        rec_md = recordings_markdown(run_recordings(out_dir, steps=steps, log=console.print))
    text = quality_markdown(run, rec_md)
    path = report if report is not None else (Path(out_dir) / "BENCHMARKS.md" if quick else Path("BENCHMARKS.md"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_section(path, text)
    out.print(text, soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote {path} and {len([r for r in run.scenes if r.figure])} figure(s) in {out_dir}")
    return path
