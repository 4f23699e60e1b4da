"""The ``lagsplit`` command."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from . import __version__
from .entry import STARTED, STOPPED_AT_START

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Split a live microscope stream into slow and fast components.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers and write them to BENCHMARKS.md.")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
out = Console()

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a setting: section.field=value (repeatable).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the effective config and exit.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="HDF5 file (.h5 / .hdf5) or OME-Zarr store (.ome.zarr) to write; an existing one is refused.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists (output.overwrite).")]
ChannelOpt = Annotated[int | None, typer.Option("--channel", min=0, help="Channel to play of a stack with channels (0-based).")]
ZOpt = Annotated[int | None, typer.Option("--z", min=0, help="Z-plane to play of a stack with z-planes (0-based).")]
AxesOpt = Annotated[str | None, typer.Option("--axes", help="The stack's axes when its metadata is wrong or missing, e.g. TYX or TCYX.")]
ViewOpt = Annotated[bool, typer.Option("--view", help="Open a napari viewer that follows the output file while the run writes it (pip install 'lagsplit[napari]').")]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)], force=True)
    # torch sets its loggers' levels once its import is complete; an import cut short (Ctrl-C
    # during start-up) would otherwise log its exit-time statistics at our level
    logging.getLogger("torch").setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
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




@contextmanager
def _starting():
    """Ctrl-C while a run command reads its settings: nothing was written; say so, leave with 130."""
    try:
        yield
    except KeyboardInterrupt:
        console.print(STOPPED_AT_START, soft_wrap=True, highlight=False)
        raise typer.Exit(130) from None


def _run(cfg, view: bool = False) -> None:
    """Build and run; user-facing errors become one message and exit code 2. ``view``: a
    napari viewer follows the output file (the run on a thread, the viewer on this one).
    Ctrl-C while the run starts up (the imports, building it) releases what was built and
    leaves with 130, saying so; once it runs, the run's own handler stops it cleanly."""
    run = None
    try:
        run = _build(cfg, view)
        status = _execute(run, cfg, view)
    except KeyboardInterrupt:
        _stopped_at_start(run)
    from lagsplit.engine.engine import final_status_line
    from lagsplit.engine.status import RunState

    from .app import output_report, stopped_line

    console.print(final_status_line(status))
    if status.state == RunState.FAILED:
        report = output_report(run) if status.sink_errors else None
        _fail((status.error or "run failed") + (f"\n{report}" if report else ""), code=1)
    if run.stopped_by is not None:  # Ctrl-C / SIGTERM: scripts see the interruption (130 / 143)
        console.print(stopped_line(run, status), soft_wrap=True, highlight=False)
        raise typer.Exit(128 + run.stopped_by)


def _build(cfg, view: bool):
    """The run, built and checked (app.build_run); its errors as one message."""
    from lagsplit.adapters.stacks import StackError
    from lagsplit.engine.hdf5_sink import OutputError

    from .app import NothingToResume, build_run

    if view:
        _check_view(cfg)
    try:
        run = build_run(cfg, started=STARTED)
    except NothingToResume as exc:
        out.print(str(exc))
        raise typer.Exit(0) from None
    except (StackError, OutputError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"[bold]lagsplit[/] {run.engine.source} -> {cfg.output.path or '(no file)'} on {run.cascade.device}")
    return run


def _execute(run, cfg, view: bool):
    """Run it with the monitor (or beside the viewer); the final status."""
    from .app import execute

    try:
        if view:
            from .napari.viewer import run_beside_viewer

            return run_beside_viewer(cfg.output.path, lambda: execute(run, console=console), run.engine.stop)
        return execute(run, console=console)
    except (OSError, ValueError, RuntimeError) as exc:  # the source could not be opened; sinks are closed
        _fail(str(exc))


def _stopped_at_start(run) -> NoReturn:
    """Ctrl-C raised as KeyboardInterrupt, which happens before the run's own handler is in
    place (start-up): give up what was built, say what is left, leave with 130. Nothing is
    imported here when no run was built (the interrupted import would start again)."""
    line = STOPPED_AT_START
    if run is not None:
        import signal

        from .app import discard, stopped_line

        discard(run)
        run.stopped_by = signal.SIGINT
        line = stopped_line(run, run.engine.status())
    console.print(line, soft_wrap=True, highlight=False)
    raise typer.Exit(130)


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
    overwrite: OverwriteOpt = False,
    png: Annotated[Path, typer.Option("--png", help="Figure to write.")] = Path("out/demo.png"),
) -> None:
    """Stream a synthetic movie with known ground truth through the engine, live, and score the split.

    The demo regenerates its own out/demo.h5 on every run; any other --out that exists is refused
    unless --overwrite."""
    with _starting():
        from .app import check_output, same_file
        from .demo import DEMO_DEFAULTS, build_demo, run_demo

        extra = ([f"output.path={_quote(str(out_path))}"] if out_path else []) + \
            (["output.overwrite=true"] if overwrite else [])
        cfg = _load(None, sets, base=DEMO_DEFAULTS, extra=extra)
    own = DEMO_DEFAULTS["output"]["path"]
    if cfg.output.path and same_file(cfg.output.path, own) and not any(s.strip().startswith("output.overwrite") for s in sets or []):
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"overwrite": True})})
    if dry_run:
        _dry(cfg)
    if cfg.source.kind != "synthetic":
        _fail("demo needs source.kind = 'synthetic' (it scores against the ground truth)")
    try:
        check_output(cfg)
    except ValueError as exc:
        _fail(str(exc))
    run = None
    try:
        run = build_demo(cfg)
    except KeyboardInterrupt:
        _stopped_at_start(run)
    run_demo(cfg, console, png, run)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="TOML config file (see configs/).")],
    sets: SetOpt = None,
    dry_run: DryRun = False,
    out_path: OutOpt = None,
    overwrite: OverwriteOpt = False,
    channel: ChannelOpt = None,
    z: ZOpt = None,
    axes: AxesOpt = None,
) -> None:
    """Run from a config file."""
    planes = _plane_settings(channel, z, axes)
    with _starting():
        if planes:
            kind = _load(config, sets).source.kind
            if kind != "replay":
                _fail(f"--channel, --z and --axes pick a plane of a recorded stack: they need source.kind = "
                      f"'replay' (the source here is {kind!r})")
        cfg = _load(config, sets, extra=_output_settings(out_path, overwrite) + planes)
    if dry_run:
        _dry(cfg)
    _run(cfg)


@app.command()
def replay(
    stack: Annotated[str, typer.Argument(help="TIFF / OME-TIFF stack, .npy, or FILE.h5:/dataset.")],
    out_path: OutOpt = None,
    overwrite: OverwriteOpt = False,
    fps: Annotated[float | None, typer.Option(help="Play at this frame rate; 0 = as fast as possible (the default).")] = None,
    channel: ChannelOpt = None,
    z: ZOpt = None,
    axes: AxesOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dry_run: DryRun = False,
    view: ViewOpt = False,
) -> None:
    """Play a recorded stack through the engine as a live stream."""
    extra = ["source.kind=replay", f"source.path={_quote(stack)}"] + ([f"source.fps={fps}"] if fps is not None else [])
    _run_source(extra + _plane_settings(channel, z, axes), out_path, overwrite, config, sets, dry_run, view)


@app.command()
def watch(
    folder: Annotated[Path, typer.Argument(help="Folder the acquisition software writes one image file per frame into.")],
    out_path: OutOpt = None,
    overwrite: OverwriteOpt = False,
    poll: Annotated[bool | None, typer.Option("--poll/--inotify", help="Poll the folder (network shares) instead of inotify events.")] = None,
    idle_timeout: Annotated[float | None, typer.Option("--idle-timeout", help="End after this many seconds without a new file.")] = None,
    end_marker: Annotated[str | None, typer.Option("--end-marker", help="End when a file of this name appears (e.g. END).")] = None,
    glob: Annotated[str | None, typer.Option("--glob", help="File names to take, e.g. '*.tif' (default '*.tif*').")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dry_run: DryRun = False,
    view: ViewOpt = False,
) -> None:
    """Follow a folder of image files as they are written, in frame-number order."""
    extra = ["source.kind=watch", f"source.path={_quote(str(folder))}"]
    for key, value in (("poll", poll), ("idle_timeout_s", idle_timeout), ("end_marker", end_marker), ("glob", glob)):
        if value is not None:
            extra.append(f"source.{key}={_quote(value) if isinstance(value, str) else str(value).lower()}")
    _run_source(extra, out_path, overwrite, config, sets, dry_run, view)


@app.command()
def attach(
    endpoint: Annotated[str, typer.Argument(help="ZeroMQ endpoint: tcp://HOST:PORT (connect) or tcp://*:PORT (bind).")],
    out_path: OutOpt = None,
    overwrite: OverwriteOpt = False,
    sub: Annotated[bool | None, typer.Option("--sub/--pull", help="SUB socket for a PUB sender (default: PULL, lossless).")] = None,
    bind: Annotated[bool | None, typer.Option("--bind/--connect", help="Bind or connect (default: bind tcp://*:PORT, else connect).")] = None,
    idle_timeout: Annotated[float | None, typer.Option("--idle-timeout", help="End after this many seconds without a message.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dry_run: DryRun = False,
    view: ViewOpt = False,
) -> None:
    """Receive frames over ZeroMQ (wire protocol v1) until the sender's end message."""
    extra = ["source.kind=zmq", f"source.endpoint={_quote(endpoint)}"]
    if sub is not None:
        extra.append(f"source.socket={'sub' if sub else 'pull'}")
    if bind is not None:
        extra.append(f"source.bind={str(bind).lower()}")
    if idle_timeout is not None:
        extra.append(f"source.idle_timeout_s={idle_timeout}")
    _run_source(extra, out_path, overwrite, config, sets, dry_run, view)


@app.command()
def publish(
    stack: Annotated[str, typer.Argument(help="TIFF / OME-TIFF stack, .npy, or FILE.h5:/dataset.")],
    endpoint: Annotated[str, typer.Argument(help="Where to send: tcp://*:PORT (bind; tcp://127.0.0.1:* picks a free port).")],
    fps: Annotated[float, typer.Option(help="Frames per second; 0 = as fast as the receiver takes them.")] = 10.0,
    pub: Annotated[bool, typer.Option("--pub/--push", help="PUB (broadcast to SUB receivers) instead of PUSH (lossless).")] = False,
    bind: Annotated[bool | None, typer.Option("--bind/--connect", help="Bind (default) or connect to a receiver that binds.")] = None,
    series: Annotated[str | None, typer.Option(help="Series name sent in every message.")] = None,
    start: Annotated[int, typer.Option(help="First frame of the stack to send.")] = 0,
    stop: Annotated[int | None, typer.Option(help="Send up to (not including) this frame.")] = None,
    channel: ChannelOpt = None,
    z: ZOpt = None,
    axes: AxesOpt = None,
    wait: Annotated[float | None, typer.Option("--wait", help="Seconds to wait for a receiver (default: until Ctrl-C).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be sent and exit.")] = False,
) -> None:
    """Replay a recorded stack over ZeroMQ at a camera rate: a stand-in microscope for `lagsplit attach`."""
    import signal
    import threading

    from lagsplit.adapters.publish import Publisher, publish_stack
    from lagsplit.adapters.stacks import StackError, open_stack
    from lagsplit.adapters.zmq_source import EndpointError, check_endpoint, wants_bind

    try:
        check_endpoint(endpoint)
        with open_stack(stack, channel=channel, z=z, axes=axes) as frames:
            desc, shape, dtype, n = frames.description, frames.shape, frames.dtype, len(frames)
            frames.frame_range(start, stop, names=("--start", "--stop"))
    except (StackError, EndpointError) as exc:
        _fail(str(exc))
    if fps < 0:
        _fail(f"--fps must be >= 0, got {fps:g}")
    kind = "pub" if pub else "push"
    if dry_run:
        import json

        out.print_json(json.dumps({"stack": desc, "frames": n, "shape": list(shape[1:]), "dtype": str(dtype),
                                   "endpoint": endpoint, "socket": kind, "bind": wants_bind(endpoint, bind, True),
                                   "fps": fps, "series": series, "start": start, "stop": stop, "channel": channel,
                                   "z": z, "axes": axes}))
        raise typer.Exit(0)
    try:
        publisher = Publisher(endpoint, socket=kind, bind=bind, series=series)
    except (EndpointError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"[bold]lagsplit publish[/] {desc} -> {publisher.endpoint} ({publisher.describe()}), "
                  f"series {publisher.series!r}, {f'{fps:g} fps' if fps else 'as fast as possible'}",
                  soft_wrap=True, highlight=False)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: publisher.stop())
    try:
        report = publish_stack(stack, publisher, fps=fps, start=start, stop=stop, wait_s=wait, channel=channel, z=z,
                               axes=axes)
    except KeyboardInterrupt:
        publisher.stop()
        _fail("interrupted", code=130)
    except TimeoutError as exc:
        _fail(str(exc), code=1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        publisher.close()
    rate = report.frames / report.seconds if report.seconds > 0 else 0.0
    console.print(f"sent {report.frames} frame(s) in {report.seconds:.2f} s ({rate:.1f} fps), {report.late} late"
                  + (" (stopped)" if report.stopped else ""), soft_wrap=True, highlight=False)


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="HDF5 file or OME-Zarr store written by lagsplit.")],
    no_config: Annotated[bool, typer.Option("--no-config", help="Do not print the config.")] = False,
) -> None:
    """Print what a run wrote: frames, shape, lags, gaps, warm-up, model versions, loss, config."""
    from .extras import ExtraMissing
    from .inspect_file import print_summary
    from .run_file import NotARunFile

    if not file.exists():
        _fail(f"{file} does not exist")
    try:
        print_summary(file, out, show_config=not no_config)
    except (NotARunFile, ExtraMissing) as exc:
        _fail(str(exc))
    except (OSError, KeyError) as exc:
        _fail(f"{file} is not a lagsplit output file ({exc})")


@app.command()
def repair(file: Annotated[Path, typer.Argument(help="HDF5 file a killed run left.")]) -> None:
    """Let every HDF5 reader open the file of a killed run: clear its open-for-write mark, cut half-written rows."""
    from .repair import RepairRefused
    from .repair import repair as repair_file

    try:
        done = repair_file(file)
    except RepairRefused as exc:
        _fail(str(exc))
    frames = f"{done.rows} frames" + (f" (index {done.first_index} .. {done.last_index})" if done.rows else "")
    if not done.changed:
        out.print(f"{file} was closed cleanly: nothing to repair ({frames}); any HDF5 reader opens it", soft_wrap=True)
        return
    what = list(done.released)
    if done.cut:
        what.append(f"cut {max(done.cut.values())} row(s) written after its last whole flush")
    out.print(f"repaired {file}: {'; '.join(what)}; it keeps {frames} and any HDF5 reader opens it", soft_wrap=True)


@app.command("view")
def view_file(
    file: Annotated[Path, typer.Argument(help="HDF5 file or OME-Zarr store written by lagsplit (or being written, with --follow).")],
    follow: Annotated[bool, typer.Option("--follow", help="Keep appending frames as the run flushes them (SWMR).")] = False,
    keep: Annotated[int | None, typer.Option("--keep", min=1, help="With --follow: frames the viewer holds, the newest (default: as many as fit in 512 MiB).")] = None,
    screenshot: Annotated[Path | None, typer.Option("--screenshot", help="Save the window as this PNG once the layers are shown, and close (no window needed: QT_QPA_PLATFORM=offscreen needs OpenGL; use xvfb-run).")] = None,
    grid: Annotated[bool, typer.Option("--grid/--overlay", help="raw beside the slow + fast overlay, or every layer in one view.")] = True,
) -> None:
    """Open a run in napari: raw (grey), slow (green) and fast (magenta over slow), time first."""
    from .extras import ExtraMissing
    from .napari.viewer import NapariMissing, require_napari, view
    from .run_file import NotARunFile

    if not follow and not file.exists():
        _fail(f"{file} does not exist")
    try:
        require_napari()
        view(file, follow=follow, keep=keep, screenshot=screenshot, grid=grid)
    except (NapariMissing, ExtraMissing) as exc:
        _fail(str(exc))
    except (OSError, NotARunFile) as exc:
        _fail(f"{file}: {exc}")
    if screenshot is not None:
        out.print(f"wrote {screenshot}")


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="HDF5 file or OME-Zarr store written by lagsplit.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="OME-TIFF to write (NAME.ome.tif).")],
    start: Annotated[int, typer.Option(min=0, help="First row (frame of the run, 0-based) to write.")] = 0,
    stop: Annotated[int | None, typer.Option(min=1, help="Write up to (not including) this row (default: the end).")] = None,
    channels: Annotated[str | None, typer.Option("--channels", help="Components to write, comma-separated, from raw,slow,fast (default: all the file has).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a run as an OME-TIFF hyperstack (TCYX, pixel size, frame interval) for Fiji and others."""
    from .export import ExportError, export_ome_tiff, parse_channels
    from .extras import ExtraMissing
    from .run_file import NotARunFile

    if not file.exists():
        _fail(f"{file} does not exist")
    try:
        rep = export_ome_tiff(file, out_path, start=start, stop=stop, channels=parse_channels(channels),
                              overwrite=overwrite)
    except (ExportError, NotARunFile, ExtraMissing) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{file}: {exc}")
    t, c, h, w = rep.shape
    px = f"{rep.pixel_size_um[1]:g} um/px" if rep.pixel_size_um else "pixel size unknown"
    dt = f"{rep.frame_interval_s:g} s/frame" if rep.frame_interval_s else "interval unknown"
    out.print(f"wrote {rep.path}: {t} frames (rows {rep.rows.start}..{rep.rows.stop - 1}) x {c} channels "
              f"({', '.join(rep.channels)}) of {h}x{w} {rep.dtype}, {px}, {dt}")


def _run_source(extra: list[str], out_path: Path | None, overwrite: bool, config: Path | None,
                sets: list[str] | None, dry_run: bool, view: bool = False) -> None:
    """The shared tail of replay / watch / attach: command settings < file < --set, then run."""
    with _starting():
        cfg = _load(config, sets, extra=[*extra, *_output_settings(out_path, overwrite)])
    if dry_run:
        _dry(cfg)
    _run(cfg, view=view)


def _check_view(cfg) -> None:
    """--view follows the output file: it needs one, and napari."""
    from .napari.viewer import NapariMissing, require_napari

    if not cfg.output.path:
        _fail("--view follows the run's output: give --out FILE.h5 or --out STORE.ome.zarr")
    try:
        require_napari()
    except NapariMissing as exc:
        _fail(str(exc))


def _output_settings(out_path: Path | None, overwrite: bool) -> list[str]:
    """--out and --overwrite as settings."""
    return ([f"output.path={_quote(str(out_path))}"] if out_path else []) + (["output.overwrite=true"] if overwrite else [])


def _plane_settings(channel: int | None, z: int | None, axes: str | None) -> list[str]:
    """--channel, --z and --axes as replay source settings."""
    return [f"source.{k}={_quote(v) if isinstance(v, str) else v}" for k, v in
            (("channel", channel), ("z", z), ("axes", axes)) if v is not None]


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _exit(130)
    except SystemExit as exc:
        _exit(exc)


def _exit(how: SystemExit | int) -> None:
    """Leave with the command's status. After a write to the output failed (a full disk),
    HDF5 holds a file it cannot close and may crash when the interpreter shuts down: then
    the streams are flushed and the process leaves at once, with the same status."""
    import os

    code = how if isinstance(how, int) else how.code
    sink = sys.modules.get("lagsplit.engine.hdf5_sink")
    if sink is not None and sink.abandoned():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))
    raise how if isinstance(how, SystemExit) else SystemExit(how)



@bench_app.command("speed")
def bench_speed(
    sizes: Annotated[str, typer.Option(help="Frame sides in pixels, comma-separated.")] = "256,512,1024,2048",
    frames: Annotated[int, typer.Option(help="Frames per run.")] = 200,
    fps: Annotated[float, typer.Option(help="Rate of the live run (0: 20 frames/s up to 512 px, half of "
                                                "MOG2's rate above).")] = 0.0,
    soak: Annotated[int, typer.Option(help="Also a run of this many frames, memory sampled (0: none).")] = 0,
    sets: Annotated[list[str] | None, typer.Option("--set", help="section.field=value, on top of the default "
                                                                 "configuration (e.g. model.device=cuda).")] = None,
    device: Annotated[str, typer.Option(help="model.device for every run ('auto': CUDA when present).")] = "auto",
    write: Annotated[bool, typer.Option("--write/--no-write", help="Update BENCHMARKS.md.")] = True,
    isa: Annotated[str, typer.Option(help="'avx2': run with torch and oneDNN held to AVX2, as on a CPU without "
                                          "AVX-512 or native bfloat16 (its own section).")] = "",
    sinks_only: Annotated[bool, typer.Option("--sinks-only", help="Only the output path: each sink setting alone "
                                                                   "beside the engine, and live runs at the engine's "
                                                                   "rate at the largest size (--frames frames).")] = False,
    sink_frames: Annotated[int, typer.Option(min=1, help="Frames each sink setting writes at 2048 px (more at "
                                                         "smaller sizes).")] = 24,
    startup_only: Annotated[bool, typer.Option("--startup-only", help="Only the start-up: how long after the command "
                                               "starts a replay of ten 512x512 frames processes its first frame "
                                               "(its own section).")] = False,
) -> None:
    """Does the engine keep up with a camera: throughput against OpenCV MOG2, a running
    median and the HDF5 sink alone; a live-rate run's latency, drops and shed work; peak
    memory; in both precisions where the CPU computes bfloat16 natively; and from 512 px,
    each output sink setting alone beside the engine (alone: --sinks-only); how long after its
    command starts a replay processes its first frame (alone: --startup-only)."""
    if startup_only:
        from .startup import run_startup

        out.print(run_startup("lagsplit bench speed --startup-only", write=write), soft_wrap=True)
        return
    from .extras import BENCH_SPEED, ExtraMissing, require

    try:
        require("lagsplit bench speed", "bench", BENCH_SPEED)
    except ExtraMissing as exc:
        _fail(str(exc))
    from .speed import run_speed

    overrides = list(sets or []) + ([f"model.device={device}"] if device != "auto" else [])
    if sinks_only:
        from .sink_speed import run_sinks

        out.print(run_sinks([int(s) for s in sizes.split(",")], overrides, sink_frames, frames, write=write),
                  soft_wrap=True)
        return
    try:
        text = run_speed([int(s) for s in sizes.split(",")], frames, overrides, live_fps=fps or None, soak=soak,
                         write=write, isa=isa)
    except ValueError as exc:
        _fail(str(exc))
    out.print(text, soft_wrap=True)


@bench_app.command("batch")
def bench_batch(
    recordings: Annotated[int, typer.Option("--recordings", min=1, help="Recordings in the batch.")] = 8,
    frames: Annotated[int, typer.Option(help="Frames per recording.")] = 300,
    size: Annotated[int, typer.Option(help="Frame side in pixels.")] = 128,
    seam_frames: Annotated[int, typer.Option(help="Frames of the scene --split is scored on.")] = 600,
    split: Annotated[int, typer.Option(min=2, help="Chunks of that scene.")] = 3,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Update BENCHMARKS.md.")] = True,
) -> None:
    """Re-processing an archive: recordings through `lagsplit replay` one after another and through
    `lagsplit batch` on 1 and 2 local Dask workers and on a scheduler with 2 worker processes; the
    slow error at --split seams."""
    from .extras import ExtraMissing, require

    try:
        from .batch.cluster import BATCH_NEEDS

        require("lagsplit bench batch", "batch", BATCH_NEEDS)
    except ExtraMissing as exc:
        _fail(str(exc))
    from .bench.batch import run_batch_bench

    text = run_batch_bench(recordings, frames, size, seam_frames=seam_frames, split=split, write=write,
                           log=console.print)
    out.print(text, soft_wrap=True)


@bench_app.command("quality")
def bench_quality(
    quick: Annotated[bool, typer.Option("--quick", help="One small scene, one setting per baseline (for tests).")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the per-scene figures.")] = Path("out/bench"),
    scenes: Annotated[list[str] | None, typer.Option("--scenes", help="Scenes to run (repeatable or comma-separated; default: all, or filaments, bleaching and drift at a --size other than 128).")] = None,
    steps: Annotated[int, typer.Option(help="lagsplit training steps per frame (fixed mode).")] = 1,
    frames: Annotated[int, typer.Option(help="Frames per scene.")] = 300,
    size: Annotated[int, typer.Option(help="Frame side in pixels. Another size than 128: the scenes as crowded as at 128 px, filaments, bleaching and drift unless --scenes, robust PCA on the central 128 px, written to a section of its own (quality<size>).")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of the scene generators.")] = 1,
    recordings: Annotated[bool, typer.Option("--recordings/--no-recordings", help="Also run the real recordings (no ground truth).")] = True,
    report: Annotated[Path | None, typer.Option("--report", help="Markdown file whose quality section is rewritten (default: BENCHMARKS.md; with --quick: OUT/BENCHMARKS.md).")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Start lagsplit from these weights (lagsplit pretrain).")] = None,
    sets: SetOpt = None,
    levers: Annotated[bool, typer.Option("--levers", help="Run the levers (each beside the default) instead of the quality table; rewrites the levers section.")] = False,
    levers_file: Annotated[Path, typer.Option("--levers-file", help="Levers to run with --levers.")] = Path("configs/levers.toml"),
) -> None:
    """Decomposition quality against ground truth: lagsplit vs running median, EMA, MOG2, incremental PCA and offline robust PCA."""
    from .extras import BENCH_BASELINES, BENCH_RECORDINGS, ExtraMissing, require

    try:
        if not levers:  # the levers run lagsplit alone
            require("lagsplit bench quality", "bench", BENCH_BASELINES)
            if recordings and not quick and size == 128:  # the recordings run with the 128 px table
                require("lagsplit bench quality", "bench", BENCH_RECORDINGS,
                        hint=" (or --no-recordings to leave the real recordings out)")
    except ExtraMissing as exc:
        _fail(str(exc))
    from .bench.command import bench_quality_command

    names = [n for item in (scenes or []) for n in item.split(",") if n]
    try:
        bench_quality_command(quick=quick, out_dir=out_dir, scenes=names or None, steps=steps, frames=frames,
                              size=size, seed=seed, recordings=recordings and not quick, report=report,
                              init=str(init) if init else None, sets=sets or [], console=console, out=out,
                              levers=levers_file if levers else None)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def pretrain(
    stack: Annotated[str, typer.Argument(help="Recorded stack to train on: TIFF / OME-TIFF, .npy, or FILE.h5:/dataset.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write (.pt).")],
    steps: Annotated[int, typer.Option(help="Training steps per frame.")] = 4,
    passes: Annotated[int, typer.Option(help="Passes over the stack.")] = 1,
    channel: ChannelOpt = None,
    z: ZOpt = None,
    axes: AxesOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    dry_run: DryRun = False,
) -> None:
    """Train the lag networks on a recorded stack and save weights a live run starts from (--init)."""
    from lagsplit.adapters.stacks import StackError

    from .pretrain import pretrain as run_pretrain

    cfg = _load(config, sets)
    if dry_run:
        _dry(cfg)
    try:
        res = run_pretrain(cfg, stack, out_path, steps=steps, passes=passes, log=console.print, channel=channel, z=z,
                           axes=axes)
    except (StackError, ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    out.print(f"wrote {res.path}: {res.steps} training steps on {res.frames} frames in {res.seconds:.1f} s")


def _add_setting_option(names: tuple[str, ...], name: str, annotation, default, to_sets) -> None:
    """Give the named commands (those with ``--set``) one more option, ``name``: wrapped,
    so the commands stay as written; ``to_sets(value)`` turns its value into settings that
    come before the command's own ``--set`` ones."""
    import functools
    import inspect

    for info in app.registered_commands:
        fn = info.callback
        if fn is None or fn.__name__ not in names or name in inspect.signature(fn).parameters:
            continue
        sig = inspect.signature(fn, eval_str=True)
        if "sets" not in sig.parameters:
            continue

        def wrapper(*args, _fn=fn, **kwargs):
            value = kwargs.pop(name, default)
            kwargs["sets"] = [*to_sets(value), *(kwargs.get("sets") or [])]
            return _fn(*args, **kwargs)

        wrapper = functools.wraps(fn)(wrapper)
        param = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), param])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**fn.__annotations__, name: annotation}
        info.callback = wrapper


_InitOpt = Annotated[Path | None, typer.Option("--init", help="Start from these weights (lagsplit pretrain): same as --set train.init=PATH.")]
_ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the output after its last frame, from its newest model checkpoint (output.resume); a missing output is started.")]
# --init WEIGHTS: --set train.init=WEIGHTS (weights from `lagsplit pretrain`)
_add_setting_option(("run", "replay", "demo", "watch", "attach"), "init", _InitOpt, None,
                    lambda v: [f"train.init={_quote(str(v))}"] if v is not None else [])
# --resume: --set output.resume=true (continue the output after its last frame)
_add_setting_option(("run", "replay", "watch", "attach"), "resume", _ResumeOpt, False,
                    lambda v: ["output.resume=true"] if v else [])


@app.command()
def batch(
    inputs: Annotated[list[str], typer.Argument(help="Recordings (TIFF / OME-TIFF, .npy, FILE.h5:/dataset), folders "
                                                     "(searched with their subfolders) and globs.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs (NAME.h5 or NAME.ome.zarr) and "
                                                              "batch.csv.")],
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Local Dask worker processes (default: "
                                                                           "one per core).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Address of a running Dask scheduler, e.g. "
                                                                      "tcp://10.0.0.5:8786 (instead of a local "
                                                                      "cluster).")] = None,
    split: Annotated[int, typer.Option("--split", min=1, help="Cut each recording into this many time chunks, "
                                                              "run on different workers.")] = 1,
    overlap: Annotated[int, typer.Option("--overlap", min=0, help="With --split: frames each chunk plays before "
                                                                  "its own, to warm up (discarded).")] = 128,
    channel: Annotated[int | None, typer.Option("--channel", min=0, help="Channel to play (default: every "
                                                                          "channel, an output each).")] = None,
    z: Annotated[int | None, typer.Option("--z", min=0, help="Z-plane to play (default: every z-plane, an "
                                                              "output each).")] = None,
    axes: AxesOpt = None,
    init: Annotated[Path | None, typer.Option("--init", help="Start every task from these weights (lagsplit "
                                                             "pretrain).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Outputs as 'h5' (NAME.h5) or 'ome-zarr' (NAME.ome.zarr).")
                   ] = "h5",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Re-process recordings on a Dask cluster: one output each in --out, a summary in batch.csv."""
    from lagsplit.adapters.stacks import StackError
    from lagsplit.extras import ExtraMissing

    from .batch.cluster import ClusterError, open_cluster
    from .batch.inputs import InputError
    from .batch.plan import BatchRequest
    from .batch.run import run_batch
    from .config import ConfigError

    if workers is not None and scheduler:
        _fail("--workers sets the size of a local cluster; with --scheduler the running cluster's workers take the "
              "tasks: give one of them")
    req = BatchRequest(inputs=list(inputs), out_dir=out_dir, config=config, sets=list(sets or []), channel=channel, z=z, axes=axes, init=init, split=split,
                       overlap=overlap, format=fmt)
    try:
        result = run_batch(req, lambda: open_cluster(workers, scheduler), console=console)
    except (ClusterError, InputError, ConfigError, StackError, ExtraMissing, ValueError) as exc:
        _fail(str(exc))
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("ok", "skipped", "failed", "cancelled")
                       if result.count(s))
    console.print(f"batch: {len(result.rows)} outputs ({counts}) in {result.seconds:.1f} s; summary "
                  f"{result.summary}", soft_wrap=True, highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
