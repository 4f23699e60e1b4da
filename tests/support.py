"""Helpers the tests share: running the real engine, an in-memory sink, a fake clock."""
from __future__ import annotations

from lagsplit.engine.config import ModelConfig, OutputConfig, RuntimeConfig, TrainConfig

# Command-line settings for a small, fast, deterministic engine (the adapter tests' runs).
FAST_CLI = ["--set", "model.lags=[4,2,1]", "--set", "model.base_channels=4", "--set", "model.levels=1",
            "--set", "train.mode=fixed", "--set", "train.steps_per_frame=1", "--set", "train.warmup_steps=5",
            "--set", "train.crop=16", "--set", "train.batch=2", "--set", "train.history=16", "--set", "monitor.mode=off"]


def run_engine(adapter, model: ModelConfig, train: TrainConfig, path=None, components=False,
               runtime: RuntimeConfig | None = None, sinks=()):
    """Run the real engine (with the HDF5 sink when ``path`` is given) and return (status, cascade)."""
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.engine import Engine
    from lagsplit.engine.hdf5_sink import HDF5Sink
    from lagsplit.engine.threaded_sink import ThreadedSink
    from lagsplit.engine.trainer import OnlineTrainer

    cascade = Cascade(model, train.history, train.warmup_steps, components=components)
    trainer = OnlineTrainer(cascade, train)
    all_sinks = list(sinks)
    if path is not None:
        all_sinks.insert(0, ThreadedSink(HDF5Sink(path, OutputConfig(path=str(path), components=components)), maxsize=8))
    engine = Engine(adapter, cascade, trainer, all_sinks, runtime=runtime or RuntimeConfig(), components=components)
    return engine.run(), cascade


class ListSink:
    """Keeps every result in memory (for tests)."""

    def __init__(self) -> None:
        self.results, self.skips, self.info, self.closed = [], [], None, False

    def setup(self, info):
        self.info = info

    def append(self, r):
        self.results.append(r)

    def skip(self, first_index, count, reason):
        self.skips.append((first_index, count, reason))

    def close(self):
        self.closed = True


class FakeClock:
    """Monotonic time (seconds from ``start``) that moves only when someone sleeps on it: pass
    the clock and its ``sleep`` to a player, and a camera rate plays without a real wait."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        self.slept += s
