"""Bounded latency on any machine: what each part of the per-frame work costs here, and
which optional parts to skip while a live source outruns the worker (docs/design.md §2).

The worker measures every part of a frame's work as it does it (``observe``); before
each frame it asks ``plan`` which parts to skip. Optional work is shed in a fixed order,
``SHED_ORDER``, and taken up again in the reverse order once the machine has room:

1. ``train``: frames no longer wait for training steps (the warm-up's step per frame,
   ``train.min_steps_per_frame``), and the trainer starts a step in the slack only while
   frames come out within half the bound (its steps share the cores with the worker
   and the writer);
2. ``components``: the shorter-lag stages (the per-lag components; written as zeros);
3. ``preview``: the monitor's preview images.

The slow stage and the write of slow and fast are never shed: when even they cannot keep
up, the queue fills and frames are dropped (``engine.overflow = "drop"``) or the source
waits, as without shedding.

Only the parts a run has are shed (``parts``: no ``train`` without slack-mode training,
no ``components`` without them); a level ``n`` skips the first ``n`` of those. The plan takes the lowest
level whose per-frame cost fits the source's frame interval and clears the frames
waiting within half the latency bound; it sheds at once, and takes work up again only
with more room and after ``HOLD_FRAMES`` frames at a level (no flapping).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from .status import RunningMean

SHED_ORDER = ("train", "components", "preview")
# One bit per part, in the HDF5 file's /frames/shed (and Decomposition.shed).
SHED_BITS = {name: 1 << i for i, name in enumerate(SHED_ORDER)}
SHED_LABELS = {"train": "training steps", "components": "component stages", "preview": "previews"}

COST_ALPHA = 0.2  # weight of a new measurement in a part's running cost
FILL = 0.9  # a level fits when it costs at most this fraction of the frame interval ...
LATENCY_SHARE = 0.5  # ... and clears the waiting frames within this share of the bound
CALM_FILL, CALM_SHARE = 0.75, 0.3  # the stricter room asked for before work is taken up again
HOLD_FRAMES = 8  # frames at a level before work is taken up again
PROBE_FRAMES = 200  # frames at a level after which one level less is tried, if its cost fits the interval


def bits_of(parts: Iterable[str]) -> int:
    """The /frames/shed bit mask of ``parts``."""
    return sum(SHED_BITS[p] for p in set(parts))


def names_of(bits: int) -> tuple[str, ...]:
    """The parts a /frames/shed bit mask names, in shedding order."""
    return tuple(p for p in SHED_ORDER if bits & SHED_BITS[p])


def summary(frames: dict[str, int]) -> str:
    """What was shed, from the frames on which each part was, e.g. "training steps on 120
    frames, previews on 3 frames" ("" when nothing was)."""
    return ", ".join(f"{SHED_LABELS[p]} on {frames[p]} frames" for p in SHED_ORDER if frames.get(p))


def status_counts(st) -> dict[str, int]:
    """The frames on which each part was shed, from a Status (its shed_<part> fields)."""
    return {p: getattr(st, f"shed_{p}") for p in SHED_ORDER}


class Costs:
    """Running cost in seconds of each part of the per-frame work on this machine: ``frame``
    (what is never shed: upload, the slow stage, the write), and each of ``parts``; None
    until measured. A part's first measurement is left out: it pays for allocations and
    the kernels' first use, which later frames do not."""

    def __init__(self, parts: tuple[str, ...] = SHED_ORDER) -> None:
        self.parts = parts
        self._means = {p: RunningMean(COST_ALPHA, skip_first=True) for p in ("frame", *parts)}
        self._given: dict[str, float] = {}  # parts whose cost is a running figure kept elsewhere

    @property
    def seconds(self) -> dict[str, float | None]:
        return {p: self._given.get(p, m.value) for p, m in self._means.items()}

    def observe(self, part: str, seconds: float) -> None:
        """A measurement of ``part`` for one frame."""
        self._means[part].add(seconds)

    def set(self, part: str, seconds: float) -> None:
        """``part``'s cost as a running figure kept elsewhere (the trainer's step time)."""
        self._given[part] = seconds

    def of_level(self, level: int) -> float:
        """Per-frame seconds when the first ``level`` of ``parts`` are skipped. A part not
        yet measured counts as free, except ``train``, which never fits before its cost is
        known: the first steps pay for allocations many times a step's time, and the
        trainer times its steps in the slack anyway."""
        seconds = self.seconds
        kept = ("frame", *self.parts[level:])
        if "train" in kept and seconds["train"] is None:
            return math.inf
        return sum(seconds[p] or 0.0 for p in kept)


class Shedder:
    """Chooses, frame by frame, how much optional work to skip so that a live run's latency
    stays under ``max_latency_ms``. ``enabled`` False (a replay as fast as possible, or a
    bound of 0) never sheds."""

    def __init__(self, max_latency_ms: float, enabled: bool = True, parts: tuple[str, ...] = SHED_ORDER) -> None:
        unknown = set(parts) - set(SHED_ORDER)
        if unknown:
            raise ValueError(f"cannot shed {sorted(unknown)}: the parts are {list(SHED_ORDER)}")
        self.parts = tuple(p for p in SHED_ORDER if p in parts)  # in shedding order
        self.bound_s = max_latency_ms / 1000.0
        self.enabled = enabled and max_latency_ms > 0
        self.costs = Costs(self.parts)
        self.level = 0
        self._at_level = 0  # frames planned at the current level
        self._interval = RunningMean(COST_ALPHA)  # between the source's frames
        self._last_arrival: float | None = None

    # ---- measurements -------------------------------------------------------------------------
    def arrived(self, t: float) -> None:
        """A frame arrived from the source at monotonic time ``t`` (the source thread)."""
        if self._last_arrival is not None and t > self._last_arrival:
            self._interval.add(t - self._last_arrival)
        self._last_arrival = t

    def observe(self, part: str, seconds: float) -> None:
        """``part`` of one frame's work took ``seconds`` (parts this run does not shed are ignored)."""
        if part in self.costs.seconds:
            self.costs.observe(part, seconds)

    def set_cost(self, part: str, seconds: float) -> None:
        """``part``'s per-frame cost is ``seconds``, a running figure kept elsewhere (ignored
        for a part this run does not shed)."""
        if part in self.costs.seconds:
            self.costs.set(part, seconds)

    @property
    def interval_s(self) -> float | None:
        """The source's running frame interval (None before two frames arrived)."""
        return self._interval.value

    def too_late(self, age_s: float, plan: tuple[str, ...]) -> bool:
        """A frame that has waited past the bound while ``plan`` skips every optional part:
        even the work never shed cannot keep up (under the drop policy it is dropped)."""
        return self.enabled and len(plan) == len(self.parts) and age_s > self.bound_s

    def late(self, latency_ms: float) -> bool:
        """A frame came out later than the share of the bound the plan keeps for clearing
        the queue (the trainer then starts no step in the slack while training is shed)."""
        return latency_ms > LATENCY_SHARE * self.bound_s * 1000.0

    # ---- the plan -----------------------------------------------------------------------------
    def plan(self, age_s: float, waiting: int) -> tuple[str, ...]:
        """The parts to skip for the next frame, which has waited ``age_s`` seconds with
        ``waiting`` more frames queued behind it."""
        if not self.enabled:
            return ()
        need = self._lowest_fitting(age_s, waiting, FILL, LATENCY_SHARE)
        if need > self.level:
            self._move(need)
        elif need < self.level and self._at_level >= HOLD_FRAMES:
            calm = self._lowest_fitting(age_s, waiting, CALM_FILL, CALM_SHARE)
            if calm < self.level:
                self._move(self.level - 1)  # one part at a time: each is measured before the next
            elif self._at_level >= PROBE_FRAMES and waiting == 0 and self._fits_interval(self.level - 1, 1.0):
                self._move(self.level - 1)  # costs measured under load may be stale: try again
        self._at_level += 1
        return self.parts[: self.level]

    def _lowest_fitting(self, age_s: float, waiting: int, fill: float, share: float) -> int:
        for level in range(len(self.parts) + 1):
            if self._fits_interval(level, fill) and age_s + (waiting + 1) * self.costs.of_level(level) <= share * self.bound_s:
                return level
        return len(self.parts)

    def _fits_interval(self, level: int, fill: float) -> bool:
        interval = self._interval.value
        return interval is None or self.costs.of_level(level) <= fill * interval

    def _move(self, level: int) -> None:
        self.level = level
        self._at_level = 0

    # ---- reports ------------------------------------------------------------------------------
    @property
    def shedding(self) -> tuple[str, ...]:
        """The parts skipped now."""
        return self.parts[: self.level]


    def costs_ms(self) -> dict[str, float]:
        """Each part's running cost in milliseconds (NaN: not measured yet)."""
        return {p: math.nan if s is None else s * 1000.0 for p, s in self.costs.seconds.items()}


__all__ = ["SHED_BITS", "SHED_LABELS", "SHED_ORDER", "Costs", "Shedder", "bits_of", "names_of", "status_counts",
           "summary"]
