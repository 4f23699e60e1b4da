"""The engine: adapter thread -> bounded input queue -> worker (inference, sinks,
training in the slack) -> sinks. docs/design.md §2.

    Engine(adapter, cascade, trainer, sinks, runtime=...).run()
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .cascade import Cascade
from .config import RuntimeConfig
from .contracts import COUNTER_NAMES, FRAME_FLAGS, Adapter, RunInfo, Sink, check_adapter, check_sink, hook
from .frame import Decomposition, Frame
from .shedding import SHED_LABELS, Shedder, bits_of, status_counts, summary
from .status import FinishReason, LatencyStats, Preview, RateMeter, RunState, Status
from .trainer import OnlineTrainer

log = logging.getLogger("lagsplit.engine")
BEHIND_EVERY_S = 5.0  # seconds between two "falling behind" warnings
FLAGGED_LOGGED = 10  # flagged frames of each kind logged; the rest are counted
SATURATED_FRACTION = 0.5  # a frame with at least this fraction of pixels at its dtype's maximum is saturated
_FLAG_WHY = {"nonfinite": "has NaN or Inf pixels", "blank": "is blank (one value throughout)",
             "saturated": f"is saturated ({SATURATED_FRACTION:.0%} of its pixels or more at the dtype's maximum)"}


def frame_flags(arr: np.ndarray, finite: bool) -> int:
    """What is wrong with a frame that is still processed (``FRAME_FLAGS`` bits): NaN or Inf
    pixels, one value throughout (a camera that sent zeros), or at least half of the pixels
    at the integer dtype's maximum. A strided sample of the pixels decides first, so a
    normal frame costs little."""
    flags = 0 if finite else FRAME_FLAGS["nonfinite"]
    sample = arr[:: max(1, arr.shape[0] // 32), :: max(1, arr.shape[1] // 32)]
    if finite and sample.min() == sample.max() and arr.min() == arr.max():
        flags |= FRAME_FLAGS["blank"]
    if arr.dtype.kind in "ui":
        top = np.iinfo(arr.dtype).max
        if np.count_nonzero(sample == top) >= SATURATED_FRACTION / 2 * sample.size \
                and np.count_nonzero(arr == top) >= SATURATED_FRACTION * arr.size:
            flags |= FRAME_FLAGS["saturated"]
    return flags
_END = object()


class Engine:
    """Runs one stream through the cascade. Parts are injected; ``clock`` is monotonic seconds.

    ``checkpoint`` (engine/checkpoint.py: ``after_frame(processed, last_index)`` and
    ``final(last_index)``) saves the model as the run goes and at its end.
    ``resume_after``: the run continues a file that holds frames up to this number (-1: a
    file without frames yet); frames numbered up to it are skipped as already done, and a
    gap before the first new frame is recorded like any other.
    ``started``: when the command started, on ``clock``; the sinks learn how long after it
    the first frame arrived (``RunInfo.extra["startup_s"]``, seconds).
    """

    def __init__(
        self,
        adapter: Adapter,
        cascade: Cascade,
        trainer: OnlineTrainer,
        sinks: Sequence[Sink] = (),
        *,
        runtime: RuntimeConfig | None = None,
        components: bool = False,
        source: str = "",
        config_json: str = "{}",
        info_extra: dict | None = None,
        clock: Callable[[], float] = time.monotonic,
        preview_every_s: float = 0.25,
        preview_size: int = 48,
        checkpoint=None,
        resume_after: int | None = None,
        started: float | None = None,
    ) -> None:
        self.adapter = check_adapter(adapter)
        self.cascade = cascade
        self.trainer = trainer
        self.sinks = [check_sink(s) for s in sinks]
        self.rt = runtime or RuntimeConfig()
        self.components = components
        describe = hook(adapter, "describe")
        self.source = source or (describe() if describe is not None else type(adapter).__name__)
        self.config_json = config_json
        self.info_extra = info_extra or {}
        self.clock = clock
        self.preview_every_s = preview_every_s
        self.preview_size = preview_size
        self.checkpoint = checkpoint
        self.resume_after = resume_after
        self.started = started

        self._q: queue.Queue = queue.Queue(maxsize=self.rt.queue)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lost: dict[int, str] = {}  # acquisition index -> why it is missing
        self._threads: list[threading.Thread] = []
        self._state = RunState.IDLE
        self._reason: FinishReason | None = None
        self._error: str | None = None
        self._series: tuple[tuple[int, ...], np.dtype] | None = None
        self._last_index: int | None = None if resume_after is None or resume_after < 0 else resume_after
        self._already_done = 0  # frames a resumed run skipped: the file holds them
        self._sink_failed = False  # a sink raised: the run stops, no checkpoint is saved after it
        self._recent: deque[tuple[int, int]] = deque(maxlen=32)  # (ring position, frame number)
        self._t0 = 0.0
        self._last_preview_t = -1e9
        self._preview: Preview | None = None
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)  # the engine's own; see _run_counters
        self._counters["resumes"] = int(resume_after is not None)
        self._in_rate, self._out_rate, self._train_rate = RateMeter(), RateMeter(), RateMeter()
        self._latency = LatencyStats()
        self._warmup = True
        self._dropped_seen = 0  # dropped frames when the worker last looked
        self._behind_warned_t = -1e9
        # which optional work to skip to hold a live run's latency bound: training steps a
        # frame waits for (slack mode), the component stages (when asked for), previews
        parts = ("train",) * (trainer.cfg.mode == "slack") + ("components",) * components + ("preview",)
        self.shedder = Shedder(self.rt.max_latency_ms, enabled=self._live(), parts=parts)
        cascade.clock = clock  # the cascade times its component stages with the engine's clock
        self._shed_logged: tuple[str, ...] = ()
        self._hold_training = False  # no training step in the slack: frames come out late (2.1)
        self._gate = float("nan")  # the last frame's share of the network's correction

    # ---- public -----------------------------------------------------------------------------
    def run(self) -> Status:
        """Start, wait until the source ends (or stop() / Ctrl-C), tear down, return the final status."""
        self.start()
        try:
            self.wait()
        except KeyboardInterrupt:
            self.stop()
            self.wait()
        return self.status()

    def start(self) -> None:
        self._t0 = self.clock()
        try:
            self.adapter.open()
        except BaseException as exc:
            # nothing has flowed yet: close every sink so no writer thread or file is left open
            self._fail(f"opening the source failed: {exc}")
            self._close_sinks()
            with self._lock:
                self._state = RunState.FAILED
            raise
        self._set_state(RunState.RUNNING)
        self.trainer.start()
        for target, name in ((self._source_loop, "source"), (self._worker_loop, "worker")):
            t = threading.Thread(target=target, name=f"lagsplit-{name}", daemon=True)
            self._threads.append(t)
            t.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has finished; True when it has."""
        worker = self._threads[1]
        end = None if timeout is None else time.monotonic() + timeout
        while worker.is_alive():
            worker.join(0.2 if end is None else max(0.0, min(0.2, end - time.monotonic())))
            if end is not None and time.monotonic() >= end:
                break
        return not worker.is_alive()

    @property
    def done(self) -> bool:
        """True once the run has finished and every sink is closed."""
        return bool(self._threads) and not self._threads[1].is_alive()

    def stop(self) -> None:
        """Ask the run to finish at the next safe point (between frames)."""
        if self._reason is None:
            self._reason = FinishReason.STOPPED
        self._stop.set()
        self._stop_adapter()

    def status(self) -> Status:
        now = self.clock()
        with self._lock:
            counters = self._run_counters()
            return Status(
                state=self._state,
                reason=self._reason if self._state in (RunState.FINISHED, RunState.FAILED) else None,
                source=self.source,
                device=str(self.cascade.device),
                lags=self.cascade.lags,
                elapsed_s=now - self._t0 if self._t0 else 0.0,
                shedding=self.shedder.shedding,
                waiting=self._ask_adapter("waiting", None),  # e.g. no sender connected
                max_latency_ms=self.rt.max_latency_ms if self.shedder.enabled else 0.0,
                received=counters["received"],
                processed=counters["processed"],
                rejected=counters["rejected"],
                dropped=counters["dropped"],
                gaps=counters["gaps"],
                nonfinite=counters["nonfinite"],
                changes=counters["changes"],
                queue_depth=self._q.qsize(),
                queue_capacity=self.rt.queue,
                in_rate_hz=self._in_rate.rate(now),
                out_rate_hz=self._out_rate.rate(now),
                latency_p50_ms=self._latency.percentile(50),
                latency_p99_ms=self._latency.percentile(99),
                train_steps=self.trainer.version,
                train_rate_hz=self._train_rate.rate(now),
                train_skipped=counters["train_skipped"],
                loss=tuple(self.trainer.last_loss),
                model_version=self.trainer.version,
                warmup=self._warmup,
                gate=self._gate,
                last_index=self._last_index,
                error=self._error,
                preview=self._preview,
                adapter_counters=self._adapter_counters(),
                total=getattr(self.adapter, "total", None),
                live=self._live(),
                not_processed=counters["not_processed"],
                blank=counters["blank"],
                saturated=counters["saturated"],
                sink_errors=counters["sink_errors"],
                resumes=counters["resumes"],
                already_done=self._already_done,
                shed_train=counters["shed_train"],
                shed_components=counters["shed_components"],
                shed_preview=counters["shed_preview"],
            )

    # ---- threads ------------------------------------------------------------------------------
    def _source_loop(self) -> None:
        try:
            for frame in self.adapter:
                frame.arrival = self.clock()
                with self._lock:
                    self._counters["received"] += 1
                    self._in_rate.add(frame.arrival)
                self.shedder.arrived(frame.arrival)
                if self._stop.is_set():
                    self._leave(frame)
                    break
                if self.rt.overflow == "drop":
                    try:
                        self._q.put_nowait(frame)
                    except queue.Full:
                        with self._lock:
                            self._counters["dropped"] += 1
                            self._lost[frame.index] = "dropped"
                elif not self._put_blocking(frame):
                    self._leave(frame)
        except Exception as exc:  # noqa: BLE001 - reported, run ends cleanly
            log.error("source failed: %s", exc)
            self._fail(f"source failed: {exc}")
        finally:
            self._put_blocking(_END, force=True)

    def _put_blocking(self, item: object, force: bool = False) -> bool:
        """Put ``item`` on the input queue, waiting for room; False when the run stopped first."""
        while True:
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                if self._stop.is_set() and not force:
                    return False
                if force and not self._threads[1].is_alive():
                    return False

    def _leave(self, frame: Frame) -> None:
        """A frame received but not processed because the run stopped (Ctrl-C, SIGTERM, an
        error): counted, and recorded as a gap of reason "not processed". Frames past
        ``engine.max_frames`` were not asked for and are not counted."""
        if self._reason == FinishReason.MAX_FRAMES:
            return
        with self._lock:
            self._counters["not_processed"] += 1
            if self._last_index is None or frame.index > self._last_index:
                self._lost.setdefault(frame.index, "not processed")

    def _worker_loop(self) -> None:
        try:
            while True:
                item = self._q.get()
                if item is _END:
                    break
                if self._stop.is_set():
                    self._leave(item)
                    break
                self._process(item)
                if self.rt.max_frames and self._counters["processed"] >= self.rt.max_frames:
                    self._reason = self._reason or FinishReason.MAX_FRAMES
                    self.stop()
                    break
        except Exception as exc:  # noqa: BLE001
            if self._sink_failed:  # a full disk, a file gone: the message says it all
                log.error("%s", exc)
                self._fail(str(exc))
            else:
                log.exception("worker failed")
                self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._teardown()

    def _live(self) -> bool:
        """Frames come at the acquisition's pace or may be dropped: falling behind loses time."""
        return self.rt.overflow == "drop" or bool(getattr(self.adapter, "live", False))

    # ---- per frame ----------------------------------------------------------------------------
    def _process(self, frame: Frame) -> None:
        """One frame: accept, set up the series, record gaps, plan what to shed, decompose,
        emit, account, train; each part's cost goes to the shedder."""
        if self.resume_after is not None and frame.index <= self.resume_after:
            self._skip_done(frame)
            return
        start = self.clock()
        arr = np.asarray(frame.array)
        if not self._accept(frame, arr):
            return
        self._set_up_series(arr, frame.arrival)
        self._record_gaps(until=frame.index)
        age = start - frame.arrival if frame.arrival else 0.0
        waiting = self._q.qsize()
        plan = self.shedder.plan(age, waiting)
        if waiting and self.rt.overflow == "drop" and self.shedder.too_late(age, plan):
            self._drop_late(frame)
            return
        shed = self._skipped(plan)
        result = self._decompose(frame, arr, shed)
        with self._writing():
            for s in self.sinks:
                s.append(result)
        stages_s = self.cascade.stage_seconds if self.components else 0.0
        preview_s = self._account(result, preview="preview" not in shed)
        # with training shed, the trainer starts no step in the slack while frames come out late
        self._hold_training = "train" in shed and self.shedder.late(result.latency_ms)
        t = self.clock()
        self._train(wait="train" not in shed)
        sh = self.shedder
        sh.observe("frame", max(0.0, t - start - stages_s - preview_s))
        for part, seconds in (("components", stages_s), ("preview", preview_s)):
            if part not in shed:
                sh.observe(part, seconds)
        owed = self.trainer.owed_seconds()  # timed by the trainer, in the slack too
        if owed is not None:
            sh.set_cost("train", owed)

    def _drop_late(self, frame: Frame) -> None:
        """Under the drop policy, a frame already past the latency bound with every optional
        part skipped and newer frames queued behind it is dropped (counted, recorded as a
        gap): even the slow stage and the write cannot keep up, and the frames after it come
        out sooner. The newest frame is always processed."""
        with self._lock:
            self._counters["dropped"] += 1
            self._lost[frame.index] = "dropped"

    def _skipped(self, plan: tuple[str, ...]) -> tuple[str, ...]:
        """Of the parts the shedder plans to skip, those this frame has work for (a preview
        only when one is due); counted, and changes logged."""
        due = {"preview": self.clock() - self._last_preview_t >= self.preview_every_s}
        shed = tuple(p for p in plan if due.get(p, True))
        if shed:
            with self._lock:
                for p in shed:
                    self._counters[f"shed_{p}"] += 1
        self._log_shedding(plan)
        return shed

    def _log_shedding(self, shed: tuple[str, ...]) -> None:
        """Log each change in what is planned to be shed (the monitor shows it too)."""
        if shed == self._shed_logged:
            return
        if len(shed) > len(self._shed_logged):
            log.warning("skipping %s to hold latency under %g ms (each part's cost here, ms: %s)",
                        ", ".join(SHED_LABELS[p] for p in shed), self.rt.max_latency_ms,
                        ", ".join(f"{p} {v:.1f}" for p, v in self.shedder.costs_ms().items()))
        else:
            log.info("taking up %s again", ", ".join(SHED_LABELS[p] for p in self._shed_logged if p not in shed))
        self._shed_logged = shed

    def _skip_done(self, frame: Frame) -> None:
        """A resumed run's frame that the file already holds (or accounts for as a gap)."""
        with self._lock:
            self._already_done += 1
            self._counters["received"] -= 1  # counted when the first run received it
            first = self._already_done == 1
        if first:
            log.info("resuming after frame %d: frame %d and any up to it are in the file already, skipped",
                     self.resume_after, frame.index)

    def _accept(self, frame: Frame, arr: np.ndarray) -> bool:
        """Reject a frame whose shape or dtype differs from the series (first frame sets it)."""
        why = None
        if self._last_index is not None and frame.index <= self._last_index:
            why = f"frame number {frame.index} is not after the last one, {self._last_index} (duplicate or out of order)"
        elif arr.ndim != 2:
            why = f"expected a 2-D (H, W) image, got shape {arr.shape}"
        elif self._series is not None and (arr.shape, arr.dtype) != self._series:
            shape, dtype = self._series
            why = f"shape {arr.shape} dtype {arr.dtype} differs from the series' {shape} {dtype}"
        if why is None:
            with self._lock:
                self._lost.pop(frame.index, None)  # rejected once, then delivered after all
            return True
        log.warning("frame %d rejected: %s", frame.index, why)
        with self._lock:
            self._counters["rejected"] += 1
            if self._last_index is None or frame.index > self._last_index:
                self._lost[frame.index] = "rejected"
        return False

    def _set_up_series(self, arr: np.ndarray, arrival: float) -> None:
        """The first accepted frame fixes the series' shape and dtype and sets up every sink;
        with ``started``, the sinks learn how long after it the frame arrived (``startup_s``)."""
        if self._series is not None:
            return
        self._series = (arr.shape, arr.dtype)
        metadata = hook(self.adapter, "metadata")  # what the source knows by now (pixel size, interval, ...)
        startup = {} if self.started is None or not arrival else {"startup_s": round(arrival - self.started, 4)}
        info = RunInfo(
            shape=tuple(arr.shape), dtype=arr.dtype.str, lags=self.cascade.lags, source=self.source,
            config_json=self.config_json, components=self.components,
            extra={**self.info_extra, **(metadata() if metadata is not None else {}), **startup},
        )
        with self._writing():
            for s in self.sinks:
                s.setup(info)

    def _record_gaps(self, until: int) -> None:
        """Record the acquisition frames after the last processed one and before ``until`` as
        gaps, in runs of one reason: dropped, rejected (by the engine or the adapter), or missing."""
        last = self._last_index
        if last is None:  # the first frame: frames the source lost before it are gaps too
            self._collect_adapter_losses(after=-1)
            with self._lock:
                before = [i for i in self._lost if i < until]
            if not before:
                return
            last = min(before) - 1
        if until <= last + 1:
            return
        self._collect_adapter_losses(after=last)
        runs: list[tuple[int, int, str]] = []
        with self._lock:
            for i in range(last + 1, until):
                reason = self._lost.pop(i, "missing")
                if runs and runs[-1][2] == reason and runs[-1][0] + runs[-1][1] == i:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1, reason)
                else:
                    runs.append((i, 1, reason))
            self._counters["gaps"] += len(runs)
        for first, count, reason in runs:
            log.info("gap: %d frame(s) from %d %s", count, first, reason)
            with self._writing():
                for s in self.sinks:
                    s.skip(first, count, reason)

    def _collect_adapter_losses(self, after: int) -> None:
        """Merge the frame numbers the adapter rejected itself (its optional ``lost`` hook)."""
        fn = hook(self.adapter, "lost")
        reported = fn() if fn is not None else {}
        with self._lock:
            for i, why in reported.items():
                if i > after:  # numbers already passed were delivered after all, or recorded
                    self._lost.setdefault(i, why)

    def _decompose(self, frame: Frame, arr: np.ndarray, shed: tuple[str, ...] = ()) -> Decomposition:
        """Run the cascade on one frame, less what ``shed`` names; the result is in the input's units."""
        x, finite = self.cascade.upload(arr)
        flags = frame_flags(arr, finite)
        if flags:
            self._report_flags(frame.index, flags)
        first = self.cascade.ring.count == 0
        seen = len(self.cascade.changes)
        out = self.cascade.infer(x, not flags, stages="components" not in shed)  # a flagged frame is shown, never trained on
        if flags & (FRAME_FLAGS["blank"] | FRAME_FLAGS["saturated"]) and first:
            self.cascade.norm.fitted = False  # the network units come from the first good frame
        self._recent.append((out.position, frame.index))
        if len(self.cascade.changes) > seen:
            self._report_change(out.position, frame.index)
        slow, fast, comps, resid = self.cascade.to_adu(out, arr, self.components)
        gate = float(out.gate) if out.gate is not None else float("nan")  # read once slow is on the host
        latency = (self.clock() - frame.arrival) * 1000.0 if frame.arrival else 0.0
        return Decomposition(
            index=frame.index, timestamp=frame.timestamp, raw=arr, slow=slow, fast=fast, components=comps,
            residual=resid, model_version=self.trainer.version, warmup=out.warmup, latency_ms=latency, flags=flags,
            shed=bits_of(shed), gate=gate,
        )

    def _report_flags(self, index: int, flags: int) -> None:
        """Count a flagged frame under each of its flags; log the first few of each kind."""
        for name, bit in FRAME_FLAGS.items():
            if flags & bit:
                with self._lock:
                    self._counters[name] += 1
                    n = self._counters[name]
                if n <= FLAGGED_LOGGED:
                    log.warning("frame %d %s: written and flagged, not trained on%s", index, _FLAG_WHY[name],
                                "" if n < FLAGGED_LOGGED else f" (further {name} frames are counted, not logged)")

    def _report_change(self, position: int, index: int) -> None:
        """Count and log a sudden change, named by the frame number where it began."""
        with self._lock:
            self._counters["changes"] += 1
        at = self.cascade.changes[-1]
        number = dict(self._recent).get(at, index - (position - at))
        log.warning("sudden change detected at frame %d: windows restart there, slow settles for %d frames",
                    number, self.cascade.settle_until - at)

    def _account(self, result: Decomposition, preview: bool = True) -> float:
        """Update the counters, rates, latency and (``preview``) the preview the status
        reports; pass the counters on. Returns the seconds the preview took."""
        now = self.clock()
        took = 0.0
        with self._lock:
            self._counters["processed"] += 1
            self._out_rate.add(now)
            self._latency.add(result.latency_ms)
            self._last_index = result.index
            self._warmup = result.warmup
            self._gate = result.gate
            if preview and now - self._last_preview_t >= self.preview_every_s:
                self._preview = self._make_preview(result)
                self._last_preview_t = now
                took = self.clock() - now
        self._push_counters()
        self._warn_if_behind(now)
        if self.checkpoint is not None and not self._sink_failed:
            self.checkpoint.after_frame(self._counters["processed"], result.index)
        return took

    def _warn_if_behind(self, now: float) -> None:
        """Log a warning (at most every BEHIND_EVERY_S) while a live source (or one under the
        drop policy) outruns the worker: the input queue more than half full, or frames
        dropped since the last look. A replay as fast as possible keeps its queue full by
        design and is not warned about."""
        if not (self.rt.overflow == "drop" or getattr(self.adapter, "live", False)):
            return
        depth, dropped = self._q.qsize(), self._counters["dropped"]
        behind = depth > self.rt.queue // 2 or dropped > self._dropped_seen
        self._dropped_seen = dropped
        if behind and now - self._behind_warned_t >= BEHIND_EVERY_S:
            self._behind_warned_t = now
            log.warning("falling behind the source: in %.1f frames/s, out %.1f frames/s, %d of %d queued, %d dropped",
                        self._in_rate.rate(now), self._out_rate.rate(now), depth, self.rt.queue, dropped)

    def _train(self, wait: bool = True) -> None:
        """Train as the trainer's mode says (in slack mode on its own thread; ``wait`` False:
        the frame waits for no step); log each step."""
        self._log_steps(self.trainer.after_frame(
            slack=lambda: self._q.empty() and not self._stop.is_set() and not self._hold_training, wait=wait))

    def _log_steps(self, steps: list) -> None:
        if not steps:
            return
        with self._lock:
            self._train_rate.add(self.clock(), len(steps))
        for s in self.sinks:
            fn = hook(s, "train_log")
            if fn is not None:
                with self._writing():
                    for st in steps:
                        fn(st.step, st.losses)

    def _make_preview(self, r: Decomposition) -> Preview:
        h, w = r.slow.shape
        step = max(1, max(h, w) // self.preview_size)
        return Preview(
            r.index,
            np.array(r.raw[::step, ::step], dtype=np.float32),
            np.array(r.slow[::step, ::step]),
            np.array(r.fast[::step, ::step]),
        )

    def _ask_adapter(self, name: str, default):
        """The answer of the adapter's optional hook ``name`` (called from any thread), or
        ``default`` without the hook or when it fails: a status is never lost to it."""
        fn = hook(self.adapter, name)
        if fn is None:
            return default
        try:
            return fn()
        except Exception:  # noqa: BLE001
            return default

    def _adapter_counters(self) -> dict[str, int]:
        """What the adapter counts itself (its optional ``counters`` hook); {} without one."""
        return dict(self._ask_adapter("counters", {}))

    def _run_counters(self) -> dict[str, int]:
        """Every counter of COUNTER_NAMES for the run: the engine's own, with what the adapter
        received and rejected before a frame reached the engine."""
        own, adapter = self._counters, self._adapter_counters()
        # frames a resumed run skips as already done were counted by the run that wrote them
        return dict(own, received=max(own["received"], adapter.get("received", 0) - self._already_done),
                    rejected=own["rejected"] + adapter.get("rejected", 0), train_skipped=self.trainer.skipped)

    def _push_counters(self) -> None:
        """Give the counters to every sink that takes them (its optional ``update_counters`` hook)."""
        with self._lock:
            counters = self._run_counters()
        for s in self.sinks:
            fn = hook(s, "update_counters")
            if fn is not None:
                with self._writing():
                    fn(counters)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every call into a sink: a sink that fails is counted (``sink_errors``) and
        the run stops with the error; no checkpoint is saved after it (the file and the model
        would no longer agree)."""
        try:
            yield
        except Exception:
            if not self._sink_failed:  # the first: later calls into a failed sink fail the same way
                with self._lock:
                    self._counters["sink_errors"] += 1
            self._sink_failed = True
            raise

    # ---- state --------------------------------------------------------------------------------
    def _set_state(self, state: RunState) -> None:
        with self._lock:
            self._state = state

    def _fail(self, message: str) -> None:
        with self._lock:
            self._error = self._error or message
            self._reason = FinishReason.ERROR
        self._stop.set()

    def _teardown(self) -> None:
        """Always runs: stop the source and the trainer, close the adapter and every sink, each on its own."""
        self._set_state(RunState.STOPPING)
        try:
            self.trainer.stop()
            self._log_steps(self.trainer.drain())
        except Exception as exc:  # noqa: BLE001
            log.error("stopping the trainer failed: %s", exc)
        if self.checkpoint is not None and self._counters["processed"] and not self._sink_failed:
            self.checkpoint.final(self._last_index)
        self._stop.set()
        self._stop_adapter()
        self._drain_input()
        if not self._sink_failed:
            try:
                self._record_trailing_gaps()
            except Exception as exc:  # noqa: BLE001 - a failing sink is reported by its close()
                log.error("recording the last gaps failed: %s", exc)
        try:
            self.adapter.close()
        except Exception as exc:  # noqa: BLE001
            log.error("closing the adapter failed: %s", exc)
        try:
            self._push_counters()
        except Exception:  # noqa: BLE001
            pass
        self._close_sinks()
        with self._lock:
            if self._reason is None:
                self._reason = FinishReason.SOURCE_ENDED
            self._state = RunState.FAILED if self._error else RunState.FINISHED
        log.info("run %s: %s", self._state.value, self._reason.value)

    def _drain_input(self) -> None:
        """Empty the input queue until the source thread has ended (unblocking a source that
        waits for room), then what is left: each frame in it was received and not processed."""
        while self._threads[0].is_alive():
            try:
                item = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, Frame):
                self._leave(item)
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Frame):
                self._leave(item)

    def _record_trailing_gaps(self) -> None:
        """Frames lost after the last processed one (dropped while the worker caught up,
        rejected, or left unprocessed by a stop) are gaps like any other: every frame the
        source gave is in the file or in a gap."""
        last = self._last_index
        if self._series is None:  # nothing accepted: no sink was set up
            return
        self._collect_adapter_losses(after=-1 if last is None else last)
        with self._lock:
            after = [i for i in self._lost if last is None or i > last]
        if after:
            self._record_gaps(until=max(after) + 1)

    def _stop_adapter(self) -> None:
        fn = hook(self.adapter, "stop")
        if fn is not None:
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("adapter stop() failed")

    def _close_sinks(self) -> None:
        """Close each sink on its own: one failing never keeps another open."""
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001
                log.error("closing sink %s failed: %s", type(s).__name__, exc)
                with self._lock:
                    self._error = self._error or f"closing sink failed: {exc}"
                    self._reason = FinishReason.ERROR


def final_status_line(st: Status) -> str:
    """One line summing up a run."""
    shed = summary(status_counts(st))
    return (
        f"{st.state.value} ({st.reason.value if st.reason else '-'}): {st.processed} frames processed, "
        f"{st.received} received, {st.rejected} rejected, {st.dropped} dropped, {st.gaps} gaps, "
        f"{st.train_steps} training steps, device {st.device}"
        + (f", {st.not_processed} received but not processed" if st.not_processed else "")
        + (f", {st.already_done} already in the file (resumed)" if st.already_done else "")
        + ("; the last frame was still in warm-up (the networks not yet in use)" if st.warmup and st.processed else "")
        + (f"; to hold latency under {st.max_latency_ms:g} ms, skipped {shed}" if shed else "")
    )


__all__ = ["Engine", "final_status_line"]
