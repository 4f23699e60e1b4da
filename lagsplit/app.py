"""Composition root: turns a Config into adapter + cascade + trainer + sinks + engine,
runs it with the monitor, and reports how it ended."""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from lagsplit.adapters.sources import ReplaySource, WatchSource, build_adapter
from lagsplit.adapters.stacks import split_h5_path
from lagsplit.engine.cascade import Cascade, resolve_device
from lagsplit.engine.contracts import Adapter, Sink
from lagsplit.engine.engine import Engine
from lagsplit.engine.hdf5_sink import HDF5Sink
from lagsplit.engine.monitor import Monitor
from lagsplit.engine.status import Status
from lagsplit.engine.threaded_sink import ThreadedSink
from lagsplit.engine.trainer import OnlineTrainer

from . import __version__
from .config import Config

log = logging.getLogger("lagsplit")


OUTPUT_SUFFIXES = (".h5", ".hdf5")


class OutputRefused(ValueError):
    """An output that would damage data (the input itself, a file of another kind, a
    file that exists without ``output.overwrite``); phrased for the user."""


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
    not an HDF5 name (``.h5`` / ``.hdf5``), one that is the run's input, one in a watched
    folder that the watcher would take as a frame, or one that exists while
    ``output.overwrite`` is false."""
    if not cfg.output.path:
        return
    out = Path(cfg.output.path)
    refuse_input_as_output(out, _inputs(cfg))
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OutputRefused(f"output {out} does not end in .h5 or .hdf5: lagsplit writes HDF5 and does not "
                            f"overwrite a file of another kind (e.g. --out {out.with_suffix('.h5')})")
    if isinstance(cfg.source, WatchSource) and same_file(out.parent, cfg.source.path) \
            and fnmatch(out.name, cfg.source.glob):
        raise OutputRefused(f"output {out} is in the watched folder {cfg.source.path} and matches "
                            f"source.glob {cfg.source.glob!r}: it would be read as a frame; write it elsewhere")
    if out.is_dir():
        raise OutputRefused(f"output path {out} is a folder, not a file")
    if out.exists() and not cfg.output.overwrite:
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


@dataclass
class Run:
    config: Config
    adapter: Adapter
    cascade: Cascade
    trainer: OnlineTrainer
    engine: Engine
    created_folders: list[Path] = field(default_factory=list)
    """Output folders this run created (deepest first); removed again if left empty."""


def build_model(cfg: Config) -> tuple[Cascade, OnlineTrainer]:
    """The cascade and its trainer, from random weights or from ``train.init``."""
    device = resolve_device(cfg.model.device)
    cascade = Cascade(cfg.model, cfg.train.history, cfg.train.warmup_steps, device=device,
                      components=cfg.output.components)
    if cfg.train.init:
        cascade.load(cfg.train.init)
    return cascade, OnlineTrainer(cascade, cfg.train)


def build_run(cfg: Config, adapter: Adapter | None = None, extra_sinks: Sequence[Sink] = ()) -> Run:
    """Everything is opened and checked here, before any frame flows: a refused output
    (check_output), a wrong weights file, a bad stack or an unwritable output fails now,
    with nothing written and no output folder left behind."""
    check_output(cfg)
    built = adapter is None
    created: list[Path] = []
    sinks: list = []
    try:
        cascade, trainer = build_model(cfg)
        adapter = adapter if adapter is not None else build_adapter(cfg.source)
        if cfg.output.path:
            created = _missing_folders(Path(cfg.output.path).parent)
            sinks.append(ThreadedSink(HDF5Sink(cfg.output.path, cfg.output, version=__version__),
                                      maxsize=cfg.engine.sink_queue, name="hdf5",
                                      max_bytes=cfg.engine.sink_queue_mib << 20))
        sinks.extend(extra_sinks)
        engine = Engine(
            adapter, cascade, trainer, sinks, runtime=cfg.engine, components=cfg.output.components,
            config_json=cfg.to_json(), info_extra={"lagsplit_kind": cfg.source.kind},
            preview_size=max(48, cfg.monitor.preview_width * 2),
        )
    except BaseException:
        for s in sinks:
            s.close()
        if built and adapter is not None:
            adapter.close()
        remove_empty_folders(created)
        raise
    return Run(cfg, adapter, cascade, trainer, engine, created)


def execute(run: Run, console=None) -> Status:
    """Run with the monitor on the main thread; Ctrl-C (or SIGTERM) stops cleanly, keeping
    what was written. A run that ends without writing its file removes the output folders
    it created."""
    try:
        return _monitored(run, console)
    finally:
        remove_empty_folders(run.created_folders)


def _monitored(run: Run, console) -> Status:
    engine = run.engine
    engine.start()
    monitor = Monitor(engine.status, run.config.monitor, console=console)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: engine.stop())
    try:
        monitor.run(done=lambda: engine.done)
    except KeyboardInterrupt:
        log.warning("interrupted: finishing the frames in hand and closing the file")
        engine.stop()
        engine.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    engine.wait()
    return engine.status()
