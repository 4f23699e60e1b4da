"""The small contracts the engine is built from: sources of frames and sinks of results.

An object is checked when it is plugged in; one that does not fit is refused
with a message naming the missing method. Optional hooks (``AdapterHooks``,
``SinkHooks``) are looked up with ``hook`` and called only where they exist.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .frame import Decomposition, Frame


@runtime_checkable
class Adapter(Protocol):
    """A source of frames. ``open`` prepares, iterating yields frames (on the engine's
    source thread), ``close`` releases. Optional hooks: ``AdapterHooks``."""

    def open(self) -> None: ...
    def __iter__(self) -> Iterator[Frame]: ...
    def close(self) -> None: ...


class AdapterHooks(Protocol):
    """Methods an adapter may have; the engine calls each only where it exists."""

    def describe(self) -> str:
        """One line naming the source (shown by the monitor, stored as the file's ``source``)."""

    def stop(self) -> None:
        """Ask a blocking iterator to end soon. Called from another thread; returns at once."""

    def counters(self) -> dict[str, int]:
        """What the adapter counts itself: ``received`` (every file or message that looked
        like a frame) and ``rejected`` (those it skipped). Called from any thread."""

    def metadata(self) -> dict[str, Any]:
        """What the source knows of the acquisition, by the first frame: any of
        ``pixel_size_um`` ((y, x) micrometres), ``frame_interval_s`` (seconds) and
        ``channel_name``; unknown ones absent or None; and ``timestamp_origin``, what the
        frames' timestamps are: ``"acquisition"`` (the times the acquisition recorded: a
        stack's plane times or frame number x its interval, a sender's ``t``), ``"played"``
        (when a replay or a generated stream played the frame), ``"received"`` (when it
        arrived) or ``"file modified"`` (a watched file's modification time). Only
        acquisition times are exported as plane times. The HDF5 sink stores them as file
        attributes. Called from the worker thread, once, before the sinks are set up."""

    @property
    def live(self) -> bool:
        """True when frames come at the acquisition's pace (a camera, a watched folder, a
        replay at a set fps), so a worker that falls behind loses time it cannot make up;
        False for a replay as fast as possible, whose queue is full by design."""

    @property
    def total(self) -> int | None:
        """Frames the source will deliver, when it knows (a replay); the monitor shows the
        progress and the time left."""

    def waiting(self) -> str | None:
        """While the source has waited a while for what it cannot get by itself (a ZeroMQ
        source with no sender connected): one line saying so, for the monitor; else None.
        Called from any thread."""

    def lost(self) -> dict[int, str]:
        """Frame numbers the adapter skipped since the last call, each with its reason (one
        of the gap reasons, e.g. ``"rejected"``), each reported once. The engine records
        them as gaps. Called from the worker thread."""


# The run's counters, by name: what ``SinkHooks.update_counters`` receives and what the
# HDF5 file's /counters holds (README, "Counters" and "When things go wrong").
COUNTER_NAMES = ("received", "processed", "rejected", "dropped", "not_processed", "gaps", "nonfinite", "blank",
                 "saturated", "train_skipped", "changes", "sink_errors", "resumes", "shed_train", "shed_components",
                 "shed_preview")
# shed_<part>: frames on which that optional part of the work was skipped to hold the
# latency bound (engine/shedding.py; per frame in /frames/shed).
# What was wrong with a frame that was still processed, one bit each: Decomposition.flags,
# the HDF5 file's /frames/flags. Each name is also the counter of such frames.
FRAME_FLAGS = {"nonfinite": 1, "blank": 2, "saturated": 4}


@dataclass(frozen=True)
class RunInfo:
    """What a sink learns before the first frame: geometry, lags and provenance."""

    shape: tuple[int, int]
    dtype: str
    lags: tuple[int, ...]
    source: str
    config_json: str
    components: bool
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    """Receives every decomposition in order. ``skip`` records a gap of ``count``
    acquisition frames starting at ``first_index`` (``reason``: dropped, rejected,
    missing). Optional hooks: ``SinkHooks``. All calls come from the worker thread."""

    def setup(self, info: RunInfo) -> None: ...
    def append(self, result: Decomposition) -> None: ...
    def skip(self, first_index: int, count: int, reason: str) -> None: ...
    def close(self) -> None: ...


class SinkHooks(Protocol):
    """Methods a sink may have; the engine calls each only where it exists."""

    def train_log(self, step: int, losses: list[float]) -> None:
        """One training step: its number (the model version it produced) and the loss of
        each lag, longest first (NaN for a lag not trained in that step)."""

    def update_counters(self, counters: dict[str, int]) -> None:
        """The run's counters (every name in ``COUNTER_NAMES``) so far; called after each
        frame and once more before ``close``."""


def hook(obj: object, name: str) -> Callable | None:
    """The optional hook ``name`` of ``obj`` (see ``AdapterHooks``, ``SinkHooks``), or None."""
    fn = getattr(obj, name, None)
    return fn if callable(fn) else None


def _require(obj: object, kind: str, methods: tuple[str, ...]) -> None:
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(
            f"{type(obj).__name__} cannot be used as {kind}: missing method(s) {', '.join(missing)}"
        )


def check_adapter(obj: object) -> Adapter:
    """Refuse an object that is not an adapter, naming what it lacks."""
    _require(obj, "an adapter", ("open", "__iter__", "close"))
    return obj  # type: ignore[return-value]


def check_sink(obj: object) -> Sink:
    """Refuse an object that is not a sink, naming what it lacks."""
    _require(obj, "a sink", ("setup", "append", "skip", "close"))
    return obj  # type: ignore[return-value]
