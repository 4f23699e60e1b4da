"""The small contracts the engine is built from: sources of frames and sinks of results.

An object is checked when it is plugged in; one that does not fit is refused
with a message naming the missing method.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .frame import Decomposition, Frame


@runtime_checkable
class Adapter(Protocol):
    """A source of frames. ``open`` prepares, iterating yields frames, ``close`` releases.

    Optional: ``counters() -> dict[str, int]`` (received / rejected ... counts the
    adapter keeps itself), ``describe() -> str`` (a one-line source description),
    and ``stop()`` (asks a blocking iterator to finish soon; called from another thread).
    """

    def open(self) -> None: ...
    def __iter__(self) -> Iterator[Frame]: ...
    def close(self) -> None: ...


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
    missing). Optional hooks: ``train_log(step, losses)`` and ``counters(dict)``."""

    def setup(self, info: RunInfo) -> None: ...
    def append(self, result: Decomposition) -> None: ...
    def skip(self, first_index: int, count: int, reason: str) -> None: ...
    def close(self) -> None: ...


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
