"""lagsplit as the engine runs it: a movie streamed through the real threaded
:class:`~engine.engine.Engine` (ArrayStream adapter -> cascade -> in-memory sink),
training in ``fixed`` mode so the numbers are reproducible."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.contracts import RunInfo
from lagsplit.engine.engine import Engine
from lagsplit.engine.frame import Decomposition

from ..app import build_model
from ..config import Config, load_config, merge_settings

BENCH_DEFAULTS: dict = {
    "train": {"mode": "fixed", "steps_per_frame": 1},
    "model": {"threads": 1, "device": "cpu"},
    "output": {"path": None},
    "monitor": {"mode": "off"},
}
"""What the benchmark changes from the defaults: fixed mode (deterministic), CPU, no file."""


class MemorySink:
    """Keeps every decomposition's slow component and warm-up flag in preallocated arrays."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.slow: np.ndarray | None = None
        self.warmup = np.ones(frames, bool)
        self.version = np.zeros(frames, np.int64)
        self.seen = 0

    def setup(self, info: RunInfo) -> None:
        self.slow = np.zeros((self.frames, *info.shape), np.float32)

    def append(self, result: Decomposition) -> None:
        assert self.slow is not None
        i = result.index
        self.slow[i] = result.slow
        self.warmup[i] = result.warmup
        self.version[i] = result.model_version
        self.seen += 1

    def skip(self, first_index: int, count: int, reason: str) -> None:
        raise RuntimeError(f"benchmark run lost {count} frame(s) from {first_index}: {reason}")

    def close(self) -> None:
        pass


@dataclass
class EngineRun:
    slow: np.ndarray
    warmup: np.ndarray
    seconds: float
    steps: int
    config: Config
    extra: dict = field(default_factory=dict)


def bench_config(overrides: dict | None = None, init: str | None = None) -> Config:
    """The benchmark's lagsplit config: the defaults, :data:`BENCH_DEFAULTS`, then ``overrides``
    (a nested dict like ``{"train": {"steps_per_frame": 2}}``); environment settings do not
    apply. A setting that does not exist or a bad value is a :class:`~lagsplit.config.ConfigError`."""
    tree = merge_settings(BENCH_DEFAULTS, overrides or {})
    if init:
        tree = merge_settings(tree, {"train": {"init": init}})
    return load_config(base=tree, env={})


def run_engine(movie: np.ndarray, cfg: Config) -> EngineRun:
    """Stream ``movie`` (T, H, W) through the engine frame by frame; the slow component of
    every frame and whether it was a warm-up frame."""
    cascade, trainer = build_model(cfg)
    sink = MemorySink(len(movie))
    engine = Engine(ArrayStream(movie, name="bench"), cascade, trainer, [sink], runtime=cfg.engine)
    t0 = time.perf_counter()
    status = engine.run()
    seconds = time.perf_counter() - t0
    if status.error:
        raise RuntimeError(f"lagsplit run failed: {status.error}")
    if sink.seen != len(movie) or sink.slow is None:
        raise RuntimeError(f"lagsplit run emitted {sink.seen} of {len(movie)} frames")
    return EngineRun(sink.slow, sink.warmup, seconds, trainer.version, cfg)
