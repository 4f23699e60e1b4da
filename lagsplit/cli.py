"""The ``lagsplit`` command."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Split a live microscope stream into slow and fast components.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers and write them to BENCHMARKS.md.")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
out = Console()

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a setting: section.field=value (repeatable).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the effective config and exit.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="HDF5 file to write.")]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _load(config: Path | None, sets: list[str] | None, base: dict | None = None, extra: list[str] | None = None):
    from .config import ConfigError, load_config

    try:
        return load_config(config, (extra or []) + (sets or []), base=base)
    except ConfigError as exc:
        _fail(str(exc))


def _dry(cfg) -> None:
    import json

    out.print_json(json.dumps(cfg.model_dump(mode="json")))
    raise typer.Exit(0)


def _run(cfg) -> None:
    """Build and run; user-facing errors become one message and exit code 2."""
    from adapters.stacks import StackError
    from engine.hdf5_sink import OutputError
    from engine.status import RunState

    from .app import build_run, execute

    try:
        run = build_run(cfg)
    except (StackError, OutputError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"[bold]lagsplit[/] {run.engine.source} -> {cfg.output.path or '(no file)'} on {run.cascade.device}")
    status = execute(run, console=console)
    from engine.engine import final_status_line

    console.print(final_status_line(status))
    if status.state == RunState.FAILED:
        _fail(status.error or "run failed", code=1)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def demo(
    sets: SetOpt = None,
    dry_run: DryRun = False,
    out_path: OutOpt = None,
    png: Annotated[Path, typer.Option("--png", help="Figure to write.")] = Path("out/demo.png"),
) -> None:
    """Stream a synthetic movie with known ground truth through the engine, live, and score the split."""
    from .demo import DEMO_DEFAULTS, run_demo

    cfg = _load(None, sets, base=DEMO_DEFAULTS, extra=[f"output.path={out_path}"] if out_path else None)
    if dry_run:
        _dry(cfg)
    if cfg.source.kind != "synthetic":
        _fail("demo needs source.kind = 'synthetic' (it scores against the ground truth)")
    run_demo(cfg, console, png)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="TOML config file (see configs/).")],
    sets: SetOpt = None,
    dry_run: DryRun = False,
    out_path: OutOpt = None,
) -> None:
    """Run from a config file."""
    cfg = _load(config, sets, extra=[f"output.path={out_path}"] if out_path else None)
    if dry_run:
        _dry(cfg)
    _run(cfg)


@app.command()
def replay(
    stack: Annotated[str, typer.Argument(help="TIFF / OME-TIFF stack, .npy, or FILE.h5:/dataset.")],
    out_path: OutOpt = None,
    fps: Annotated[float, typer.Option(help="Play at this frame rate; 0 = as fast as possible.")] = 0.0,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dry_run: DryRun = False,
) -> None:
    """Play a recorded stack through the engine as a live stream."""
    extra = [f"source.kind=replay", f"source.path={_quote(stack)}", f"source.fps={fps}"]
    if out_path:
        extra.append(f"output.path={_quote(str(out_path))}")
    cfg = _load(config, sets, extra=extra)
    if dry_run:
        _dry(cfg)
    _run(cfg)


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="HDF5 file written by lagsplit.")],
    no_config: Annotated[bool, typer.Option("--no-config", help="Do not print the config.")] = False,
) -> None:
    """Print what a run wrote: frames, shape, lags, gaps, warm-up, model versions, loss, config."""
    from .inspect_file import print_summary

    if not file.exists():
        _fail(f"{file} does not exist")
    try:
        print_summary(file, out, show_config=not no_config)
    except (OSError, KeyError) as exc:
        _fail(f"{file} is not a lagsplit output file ({exc})")


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
