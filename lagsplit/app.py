"""Composition root: turns a Config into adapter + cascade + trainer + sinks + engine,
runs it with the monitor, and reports how it ended."""
from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from lagsplit.adapters.sources import ReplaySource, WatchSource, build_adapter
from lagsplit.adapters.stacks import open_stack, split_h5_path
from lagsplit.engine.cascade import Cascade, network_mismatch, resolve_device
from lagsplit.engine.checkpoint import Checkpointer, UnusableCheckpoint, checkpoint_path, load_checkpoint
from lagsplit.engine.contracts import Adapter, Sink
from lagsplit.engine.engine import Engine
from lagsplit.engine.hdf5_sink import FileState, Resume, abandoned, resume_mismatch, writer_alive
from lagsplit.engine.monitor import Monitor
from lagsplit.engine.outputs import (
    is_output_path,
    is_zarr_path,
    make_sink,
    read_output_state,
    store_kind_problem,
)
from lagsplit.engine.status import RunState, Status
from lagsplit.engine.threaded_sink import ThreadedSink
from lagsplit.engine.trainer import OnlineTrainer

from . import __version__
from .config import Config
from .extras import ZARR, ExtraMissing, require
from .run_file import open_run

log = logging.getLogger("lagsplit")


class OutputRefused(ValueError):
    """An output that would damage data (the input itself, a file of another kind, a
    file that exists without ``output.overwrite``, a resume that does not fit the file);
    phrased for the user."""


class NothingToResume(Exception):
    """``--resume`` of a replay whose output already holds every frame asked for."""


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path once symlinks and ``..`` are
    resolved, or hard links to one file."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def refuse_input_as_output(out: str | Path, inputs: Sequence[str | Path], option: str = "--out") -> None:
    """OutputRefused when ``out`` is one of the files a run reads."""
    for inp in inputs:
        if same_file(out, inp):
            raise OutputRefused(f"{option} {out} is the input {inp}: writing it would destroy the input; "
                                f"give another {option}")


def _inputs(cfg: Config) -> list[Path]:
    """The files a run reads: the replayed stack and the weights it starts from."""
    found = []
    if isinstance(cfg.source, ReplaySource):
        found.append(Path(split_h5_path(cfg.source.path)[0]))
    if cfg.train.init:
        found.append(Path(cfg.train.init))
    return found


def check_output(cfg: Config) -> None:
    """Refuse, before anything is opened, an output that would damage data: one that is
    not an HDF5 name (``.h5`` / ``.hdf5``) or an OME-Zarr one (``.ome.zarr``: also refused
    when it exists as a file or a folder that is no Zarr store, or when the zarr extra is
    not installed), one that is the run's input, one in a watched folder that the watcher
    would take as a frame, or one that exists while ``output.overwrite`` is false."""
    if not cfg.output.path:
        return
    out = Path(cfg.output.path)
    refuse_input_as_output(out, _inputs(cfg))
    if not is_output_path(out):
        raise OutputRefused(f"output {out} does not end in .h5, .hdf5 or .ome.zarr: lagsplit writes HDF5 or "
                            f"OME-Zarr and does not overwrite a file of another kind (e.g. --out "
                            f"{out.with_suffix('.h5')})")
    if isinstance(cfg.source, WatchSource) and same_file(out.parent, cfg.source.path) \
            and fnmatch(out.name, cfg.source.glob):
        raise OutputRefused(f"output {out} is in the watched folder {cfg.source.path} and matches "
                            f"source.glob {cfg.source.glob!r}: it would be read as a frame; write it elsewhere")
    if is_zarr_path(out):
        try:
            require(f"--out {out}", "zarr", ZARR)
        except ExtraMissing as exc:
            raise OutputRefused(str(exc)) from None
        why = store_kind_problem(out)
        if why:
            raise OutputRefused(why)
    elif out.is_dir():
        raise OutputRefused(f"output path {out} is a folder, not a file")
    if cfg.output.resume and cfg.output.overwrite:
        raise OutputRefused(f"--resume continues {out} and --overwrite replaces it: give one of them")
    if out.exists() and not cfg.output.overwrite and not cfg.output.resume:
        raise OutputRefused(f"{out} exists: give --overwrite to replace it (or set output.overwrite = true), "
                            f"--resume to continue it after its last frame (output.resume = true), "
                            f"or choose another --out")


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove the folders a run created (deepest first) that are still empty: a run that
    wrote nothing leaves no empty output folder. A folder holding anything stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or already gone): its parents are not empty either


@dataclass(frozen=True)
class ResumePlan:
    """How a run continues its output: the file's state, the frame number it continues
    after (-1: the file holds none yet) and the config adjusted (a replay's start)."""

    state: FileState
    after: int
    config: Config


def plan_resume(cfg: Config) -> ResumePlan | None:
    """For ``output.resume`` on an existing file: check, without changing it, that this run
    can continue it (OutputRefused naming the setting that differs, or the process still
    writing it), and move a replay's start past the frames it holds (NothingToResume when
    none are left). None when there is nothing to resume (no resume asked, or no file yet)."""
    if not (cfg.output.resume and cfg.output.path and Path(cfg.output.path).exists()):
        return None
    out = Path(cfg.output.path)
    try:
        state = read_output_state(out)
    except (OSError, KeyError, ValueError) as exc:
        what = "store" if is_zarr_path(out) else "file"
        raise OutputRefused(f"cannot resume {out}: not a lagsplit output {what} it can continue ({exc}); "
                            f"the {what} is left as it was") from exc
    if writer_alive(state):
        raise OutputRefused(f"cannot resume {out}: process {state.writer[1]} is writing it now")
    differs = network_mismatch(state.config.get("model", {}), cfg.model)
    if differs is not None:
        key, saved, mine = differs
        raise OutputRefused(f"cannot resume {out}: it was written with model.{key} = {saved!r}, this run "
                            f"uses {mine!r}; the file is left as it was")
    shape = dtype = None
    src = cfg.source
    if isinstance(src, ReplaySource):
        with open_stack(src.path, channel=src.channel, z=src.z, axes=src.axes) as stack:
            shape, dtype, length = tuple(stack.shape[1:]), stack.dtype.str, len(stack)
    why = resume_mismatch(state, cfg.output, lags=tuple(cfg.model.lags), components=cfg.output.components,
                          shape=shape, dtype=dtype)
    if why:
        raise OutputRefused(f"cannot resume {out}: {why}; the file is left as it was")
    if isinstance(src, ReplaySource):
        # a replay plays again what the file does not hold: from the frame after its last row
        # (frames recorded as gaps after it are played and recorded anew)
        after = -1 if state.last_index is None else state.last_index
        stop = length if src.stop is None else min(src.stop, length)
        start = max(src.start, after + 1)
        if start >= stop:
            raise NothingToResume(f"{out} holds every frame of {src.path} up to {stop - 1}: nothing to resume")
        cfg = cfg.model_copy(update={"source": src.model_copy(update={"start": start})})
    else:
        # a live source's frames up to the last one the file accounts for (a row or a gap) are done
        after = -1 if state.last_recorded is None else state.last_recorded
    previous = state.config.get("source", {}).get("path")
    if isinstance(src, ReplaySource) and previous and previous != src.path:
        log.warning("resuming %s, written from %s, with %s", out, previous, src.path)
    return ResumePlan(state, after, cfg)


@dataclass
class Run:
    config: Config
    adapter: Adapter
    cascade: Cascade
    trainer: OnlineTrainer
    engine: Engine
    created_folders: list[Path] = field(default_factory=list)
    """Output folders this run created (deepest first); removed again if left empty."""
    resume: ResumePlan | None = None
    """How the run continues its output (--resume), if it does."""
    stopped_by: int | None = None
    """The signal that stopped the run (SIGINT for Ctrl-C, SIGTERM), if one did."""


def build_model(cfg: Config) -> tuple[Cascade, OnlineTrainer]:
    """The cascade and its trainer, from random weights or from ``train.init``."""
    device = resolve_device(cfg.model.device)
    cascade = Cascade(cfg.model, cfg.train.history, cfg.train.warmup_steps, device=device,
                      components=cfg.output.components)
    if cfg.train.init:
        cascade.load(cfg.train.init)
    return cascade, OnlineTrainer(cascade, cfg.train)


def build_run(cfg: Config, adapter: Adapter | None = None, extra_sinks: Sequence[Sink] = (),
              started: float | None = None) -> Run:
    """Everything is opened and checked here, before any frame flows: a refused output
    (check_output), a resume that does not fit its file (plan_resume), a wrong weights
    file, a bad stack or an unwritable output fails now, with nothing written and no
    output folder left behind. ``started``: when the command started (``time.monotonic``),
    for the output's ``startup_s``."""
    check_output(cfg)
    plan = plan_resume(cfg)
    if plan is not None:
        cfg = plan.config
    built = adapter is None
    created: list[Path] = []
    sinks: list = []
    try:
        cascade, trainer = build_model(cfg)
        checkpoint = version = None
        if cfg.output.path:
            run_id = plan.state.run_id if plan is not None else uuid.uuid4().hex
            ckpt = checkpoint_path(cfg.output.path)
            if plan is not None:
                version = _restore(ckpt, cascade, trainer, run_id, cfg.output.path)
                if version is not None:
                    prime_from_file(cascade, cfg.output.path)
            checkpoint = Checkpointer(ckpt, cascade, trainer, cfg.output.checkpoint_every, run_id)
        adapter = adapter if adapter is not None else build_adapter(cfg.source)
        if cfg.output.path:
            created = _missing_folders(Path(cfg.output.path).parent)
            resume = None if plan is None else Resume(plan.state, plan.after, -1 if version is None else version)
            sinks.append(ThreadedSink(make_sink(cfg.output.path, cfg.output, version=__version__, run_id=run_id,
                                                resume=resume),
                                      maxsize=cfg.engine.sink_queue,
                                      name="zarr" if is_zarr_path(cfg.output.path) else "hdf5",
                                      max_bytes=cfg.engine.sink_queue_mib << 20))
        sinks.extend(extra_sinks)
        engine = Engine(
            adapter, cascade, trainer, sinks, runtime=cfg.engine, components=cfg.output.components,
            config_json=cfg.to_json(), info_extra={"lagsplit_kind": cfg.source.kind},
            preview_size=max(48, cfg.monitor.preview_width * 2), checkpoint=checkpoint,
            resume_after=None if plan is None else plan.after, started=started,
        )
    except BaseException:
        _release(sinks, adapter if built else None, created)
        raise
    return Run(cfg, adapter, cascade, trainer, engine, created, plan)


def _release(sinks: Sequence[Sink], adapter: Adapter | None, created: Sequence[Path]) -> None:
    """Close the sinks and the adapter of a run that never started, each on its own, and
    remove the output folders it created: nothing is left written."""
    for part in (*sinks, *([adapter] if adapter is not None else [])):
        try:
            part.close()
        except Exception as exc:  # noqa: BLE001 - the others are closed all the same
            log.error("closing %s failed: %s", type(part).__name__, exc)
    remove_empty_folders(created)


def discard(run: Run) -> None:
    """Give up a built run (Ctrl-C during start-up): one that has not started is released
    (its sinks and adapter closed, no file written, its output folders removed); one that
    has is stopped and waited for, its file closed with what it holds."""
    if run.engine.status().state is RunState.IDLE:
        _release(run.engine.sinks, run.adapter, run.created_folders)
        return
    run.engine.stop()
    run.engine.wait()
    remove_empty_folders(run.created_folders)


def _restore(ckpt: Path, cascade: Cascade, trainer: OnlineTrainer, run_id: str, out: str) -> int | None:
    """Load the file's checkpoint into a resumed run; the model version it gave, or None
    when there is none to use (the networks start as configured, and the log says so)."""
    if not ckpt.exists():
        log.warning("resuming %s without a checkpoint (none was saved before the run ended): the networks "
                    "start afresh", out)
        return None
    try:
        restored = load_checkpoint(ckpt, cascade, trainer, run_id=run_id)
    except UnusableCheckpoint as exc:
        log.warning("resuming %s: %s; the networks start afresh", out, exc)
        return None
    except ValueError as exc:
        raise OutputRefused(f"cannot resume {out}: {exc}; the file is left as it was") from exc
    log.info("resuming %s from its checkpoint at model version %d (frame %s)", out, restored.model_version,
             restored.last_index)
    return restored.model_version


def prime_from_file(cascade: Cascade, out: str | os.PathLike) -> int:
    """Give a resumed run's cascade the frames its file ends with, so that its windows and
    ring hold them and the restored networks are in use from the first new frame (instead
    of a warm-up of the longest lag and the windows filling again). The file's first frame
    sets the fading's reference first, as it did in the run that wrote it. Needs ``/raw``
    (``output.raw``); frames the file flags as bad are pushed as bad. The number of frames
    given (0 without ``/raw``). The rows are those the file holds whole (a killed run's
    half-written rows are cut when the sink reopens it)."""
    with open_run(out) as f:
        rows = min(len(f["raw"]), f.whole_rows()) if "raw" in f else 0
        if rows == 0:
            log.info("resuming %s without /raw: the windows fill again from the first new frame", out)
            return 0
        raw = f["raw"]
        flags = f["frames/flags"][:rows] if "frames/flags" in f else np.zeros(rows, np.uint8)
        keep = min(rows, cascade.ring.capacity)
        if rows > keep:
            cascade.set_fading_reference(cascade.upload(raw[0])[0])
        for row in range(rows - keep, rows):
            x, finite = cascade.upload(raw[row])
            cascade.infer(x, finite and not flags[row])
    log.info("resuming %s: the last %d frames of the file primed the windows", out, keep)
    return keep


def execute(run: Run, console=None) -> Status:
    """Run with the monitor on the main thread; Ctrl-C (or SIGTERM) stops cleanly, keeping
    what was written. A run that ends without writing its file removes the output folders
    it created."""
    try:
        return _monitored(run, console)
    finally:
        remove_empty_folders(run.created_folders)


def output_report(run: Run) -> str | None:
    """After a run whose output failed: what the file holds now and how to go on."""
    path = run.config.output.path
    if not path or not Path(path).exists():
        return None
    if abandoned():  # this process still holds the file: reading it here could crash HDF5
        return (f"{path} is left marked open for write: `lagsplit repair {path}` (once there is room) lets every "
                f"reader open it, and --resume continues it")
    try:
        st = read_output_state(path)
    except (OSError, KeyError, ValueError) as exc:
        return f"{path} cannot be read back ({exc})"
    frames = f"{st.rows} whole frames" + (f" (index up to {st.last_index})" if st.rows else "")
    if not st.open_for_write or is_zarr_path(path):  # a store needs no repair: readers trust its flushed_rows
        return f"{path} is closed and holds {frames}; --resume continues it once there is room"
    return (f"{path} holds {frames} and is still marked open for write: `lagsplit repair {path}` (once there is "
            f"room) lets every reader open it, and --resume continues it")


def stopped_line(run: Run, status: Status) -> str:
    """The last line of a run a signal stopped: what the file holds, what was left."""
    name = signal.Signals(run.stopped_by).name if run.stopped_by else "a stop"
    if not status.processed:
        kept = f" ({run.config.output.path} is as it was)" if run.resume is not None else ""
        return f"stopped by {name} before the first frame; nothing written{kept}"
    where = f" to {run.config.output.path}" if run.config.output.path else ""
    left = (f", {status.not_processed} received but not processed (recorded as gaps, reason 'not processed')"
            if status.not_processed else "")
    return f"stopped by {name}: {status.processed} frames written{where}{left}; the file is closed"


class _Stopper:
    """Ctrl-C (SIGINT) and SIGTERM during a run: the first stops the engine at the next frame
    (the file is flushed and closed, what was queued is counted as not processed); a second
    only says that the file is being closed; a third quits at once, leaving the file as a
    killed run does (readable up to its last flush, `lagsplit repair`). The handler only
    records the signal: the monitor's loop acts on it (a signal handler must not take the
    locks the interrupted code may hold)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, run: Run) -> None:
        self.run = run
        self.received: list[int] = []
        self.acted = 0
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _on_signal(self, signum: int, _frame) -> None:
        self.received.append(signum)
        if len(self.received) >= 3:
            os.write(2, f"\n{signal.Signals(signum).name} again: quitting now; {self.run.config.output.path} keeps "
                        f"the frames flushed so far (lagsplit repair lets every reader open it)\n".encode())
            os._exit(128 + signum)

    def act(self) -> None:
        """Called from the monitor's loop: stop the engine on the first signal, report the next."""
        while self.acted < len(self.received):
            signum = self.received[self.acted]
            self.acted += 1
            name = signal.Signals(signum).name
            if self.acted == 1:
                self.run.stopped_by = signum
                log.warning("%s: stopping after the frame in hand; writing what is queued and closing %s",
                            name, self.run.config.output.path or "the run")
                self.run.engine.stop()
            else:
                log.warning("%s: still closing %s (press Ctrl-C once more to quit at once; the file keeps "
                            "what was flushed)", name, self.run.config.output.path or "the run")


def _monitored(run: Run, console) -> Status:
    engine = run.engine
    stopper = _Stopper(run)
    stopper.install()  # before the engine starts: from here on a signal stops the run cleanly
    try:
        engine.start()
    except BaseException:
        stopper.restore()
        raise
    monitor = Monitor(engine.status, run.config.monitor, console=console)

    def done() -> bool:
        stopper.act()
        return engine.done

    try:
        monitor.run(done=done)
    except KeyboardInterrupt:  # no handler of our own (not the main thread)
        run.stopped_by = run.stopped_by or signal.SIGINT
        log.warning("interrupted: finishing the frame in hand and closing the file")
        engine.stop()
        engine.wait()
    finally:
        engine.wait()
        stopper.act()
        stopper.restore()
    return engine.status()
