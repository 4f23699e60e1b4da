"""Run state and the frozen status snapshot the monitor reads (never the live objects)."""
from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class RunState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"


class FinishReason(enum.Enum):
    SOURCE_ENDED = "source ended"
    MAX_FRAMES = "max frames reached"
    STOPPED = "stopped by user"
    ERROR = "error"


@dataclass(frozen=True)
class Preview:
    """Small copies of the latest frame's raw, slow and fast images (for the monitor)."""

    index: int
    raw: np.ndarray
    slow: np.ndarray
    fast: np.ndarray


@dataclass(frozen=True)
class Status:
    """What the monitor shows, copied under the engine's lock: counters (as in the file's
    /counters), rates in events per second, latency in milliseconds."""

    state: RunState
    reason: FinishReason | None
    source: str
    device: str
    lags: tuple[int, ...]
    elapsed_s: float
    received: int
    processed: int
    rejected: int
    dropped: int
    gaps: int
    nonfinite: int
    changes: int
    queue_depth: int
    queue_capacity: int
    in_rate_hz: float
    out_rate_hz: float
    latency_p50_ms: float
    latency_p99_ms: float
    train_steps: int
    train_rate_hz: float
    train_skipped: int
    loss: tuple[float, ...]
    model_version: int
    warmup: bool
    last_index: int | None
    error: str | None
    preview: Preview | None = None
    adapter_counters: dict[str, int] = field(default_factory=dict)  # the adapter's own (AdapterHooks.counters)
    not_processed: int = 0  # received, then left in the queue when the run was stopped
    blank: int = 0  # frames of one value throughout (an all-zero frame): written, flagged, not trained on
    saturated: int = 0  # frames with half their pixels or more at the dtype's maximum: likewise
    sink_errors: int = 0  # writes to the output that failed (the run stops at the first)
    resumes: int = 0  # 1 when this run continues an existing file (--resume)
    already_done: int = 0  # frames a resumed run skipped because the file holds them
    total: int | None = None  # frames the source will deliver, when it knows (a replay: AdapterHooks.total)
    live: bool = False  # frames come at the acquisition's pace (AdapterHooks.live) or may be dropped
    gate: float = math.nan  # the last frame's share of the slow network's correction (NaN: none used)
    waiting: str | None = None  # what the source is waiting for, e.g. "no sender connected to ..." (AdapterHooks.waiting)
    shedding: tuple[str, ...] = ()  # optional work skipped now to hold the latency bound (engine/shedding.py)
    max_latency_ms: float = 0.0  # that bound (0: none, e.g. a replay as fast as possible)
    shed_train: int = 0  # frames that did not wait for their training steps
    shed_components: int = 0  # frames whose shorter-lag stages were skipped (components written as zeros)
    shed_preview: int = 0  # frames on which no preview was made


class RunningMean:
    """An exponential running mean with weight ``alpha`` for each new value; ``skip_first``
    leaves the first value out (a first measurement that pays for allocations and the
    kernels' first use, which later ones do not). ``value`` is None until one counts."""

    def __init__(self, alpha: float, skip_first: bool = False) -> None:
        self.alpha = alpha
        self._skip = skip_first
        self.value: float | None = None

    def add(self, x: float) -> None:
        if self._skip:
            self._skip = False
        elif self.value is None:
            self.value = x
        else:
            self.value += self.alpha * (x - self.value)


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.times: deque[float] = deque()

    def add(self, t: float, n: int = 1) -> None:
        for _ in range(n):
            self.times.append(t)
        self._trim(t)

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self.times) < 2:
            return 0.0
        span = max(now - self.times[0], 1e-9)
        return (len(self.times) - 1) / span if span > 0 else 0.0


class LatencyStats:
    """Percentiles of the last ``n`` latencies, in milliseconds."""

    def __init__(self, n: int = 1024) -> None:
        self.values: deque[float] = deque(maxlen=n)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def percentile(self, q: float) -> float:
        if not self.values:
            return math.nan
        return float(np.percentile(np.fromiter(self.values, float), q))
