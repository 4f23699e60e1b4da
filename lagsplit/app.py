"""Composition root: turns a Config into adapter + cascade + trainer + sinks + engine,
runs it with the monitor, and reports how it ended."""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from lagsplit.adapters.sources import build_adapter
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


@dataclass
class Run:
    config: Config
    adapter: Adapter
    cascade: Cascade
    trainer: OnlineTrainer
    engine: Engine


def build_model(cfg: Config) -> tuple[Cascade, OnlineTrainer]:
    """The cascade and its trainer, from random weights or from ``train.init``."""
    device = resolve_device(cfg.model.device)
    cascade = Cascade(cfg.model, cfg.train.history, cfg.train.warmup_steps, device=device)
    if cfg.train.init:
        cascade.load(cfg.train.init)
    return cascade, OnlineTrainer(cascade, cfg.train)


def build_run(cfg: Config, adapter: Adapter | None = None, extra_sinks: Sequence[Sink] = ()) -> Run:
    """Everything is opened and checked here, before any frame flows: a bad stack, an
    unwritable output or a wrong weights file fails now, with nothing written."""
    sinks: list = []
    if cfg.output.path:
        sinks.append(ThreadedSink(HDF5Sink(cfg.output.path, cfg.output, version=__version__),
                                  maxsize=cfg.engine.sink_queue, name="hdf5"))
    try:
        adapter = adapter if adapter is not None else build_adapter(cfg.source)
        cascade, trainer = build_model(cfg)
    except BaseException:
        for s in sinks:
            s.close()
        raise
    sinks.extend(extra_sinks)
    engine = Engine(
        adapter, cascade, trainer, sinks, runtime=cfg.engine, components=cfg.output.components,
        config_json=cfg.to_json(), info_extra={"lagsplit_kind": cfg.source.kind},
        preview_size=max(48, cfg.monitor.preview_width * 2),
    )
    return Run(cfg, adapter, cascade, trainer, engine)


def execute(run: Run, console=None) -> Status:
    """Run with the monitor on the main thread; Ctrl-C (or SIGTERM) stops cleanly, keeping what was written."""
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
