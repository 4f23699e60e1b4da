"""The ``watch`` adapter: follows a folder into which acquisition software writes one
image file per frame (TIFF first; any format ``tifffile.imread`` reads).

- Events come from watchdog: inotify on Linux (with close-after-write events), or
  polling (``poll=True``) for network shares, where inotify sees nothing.
- A file counts only once it is complete: closed after writing (inotify), or its
  size and mtime unchanged for ``settle_s`` seconds, *and* it parses. One that
  does not parse is retried until ``give_up_s`` seconds after it last changed,
  then skipped, counted as rejected and logged with its name.
- Files already in the folder at start are taken first.
- Frames go out in the order of the frame number in the file name, not in the
  order events arrive. A frame whose predecessor is missing waits up to
  ``reorder_s`` seconds for it; after that the missing number is a gap.
- The run ends on ``stop()`` (Ctrl-C), after ``idle_timeout_s`` without a new
  file, or when a file named ``end_marker`` appears, as configured.

Frame numbers: ``frame_pattern`` is a regular expression searched in the file
name whose group ``frame`` (or first group) is the number. Without one, the
number after a ``t`` / ``time`` tag is used (``00017_t0017.tif`` from
pymmcore-plus, ``img_channel000_position000_time000000017_z000.tif`` from
Micro-Manager 2), then the first number of Micro-Manager 1.4's
``img_000000017_DAPI_000.tif``, else the last number in the name (``frame_0017.tif``).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lagsplit.engine.frame import Frame

from .tally import Tally

log = logging.getLogger("lagsplit.watch")

_TIME_TAG = re.compile(r"(?:^|[^A-Za-z0-9])(?:t|time|T|Time|TIME)(\d+)(?=\D|$)")
_MM14 = re.compile(r"^img_(\d+)_")  # Micro-Manager 1.4 separate files: img_<frame>_<channel>_<z>.tif
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _stem(name: str) -> str:
    """The name without its extension(s): ``a_t0001.ome.tif`` -> ``a_t0001``."""
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def frame_number(name: str, pattern: re.Pattern[str] | None = None) -> int | None:
    """The acquisition frame number in a file name, or None when it has none (see module doc)."""
    if pattern is not None:
        m = pattern.search(name)
        if not m:
            return None
        text = m.group("frame") if "frame" in pattern.groupindex else (m.group(1) if pattern.groups else m.group(0))
        return int(text) if text and text.isdigit() else None
    stem = _stem(name)
    m = _TIME_TAG.search(stem) or _MM14.search(stem) or _LAST_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2-D image with tifffile; raises on a partial, corrupt or non-image file."""
    import tifffile

    arr = tifffile.imread(path)
    if arr.ndim > 2:
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    if arr.ndim != 2:
        raise ValueError(f"not a single 2-D image: shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "uif":
        raise ValueError(f"not a numeric image: dtype {arr.dtype}")
    return arr


@dataclass
class _Pending:
    """A file seen but not yet taken: its stat signature, when it last changed, retries."""

    path: str
    number: int
    seen: float
    changed: float
    sig: tuple[int, int] | None = None
    closed: bool = False
    next_try: float = 0.0
    error: str = ""


@dataclass
class _Ready:
    array: np.ndarray
    name: str
    mtime: float
    since: float


class WatchAdapter:
    """Follows ``folder``; see the module doc. ``clock``, ``reader`` and the observer are
    injected so tests control time and parsing."""

    live = True  # frames come at the acquisition's pace (contracts.AdapterHooks.live)

    def __init__(self, folder: str | os.PathLike, glob: str = "*.tif*", frame_pattern: str | None = None,
                 poll: bool = False, poll_interval_s: float = 0.5, settle_s: float = 0.25,
                 give_up_s: float = 5.0, reorder_s: float = 1.0, idle_timeout_s: float | None = None,
                 end_marker: str | None = None, existing: bool = True, tick_s: float = 0.02,
                 max_ready: int = 64, gone_timeout_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 reader: Callable[[str], np.ndarray] = read_image,
                 observer_factory: Callable[[], object] | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.exists():
            raise FileNotFoundError(f"watch folder {self.folder} does not exist (create it, or point at the "
                                    "folder the acquisition software writes into)")
        if not self.folder.is_dir():
            raise NotADirectoryError(f"watch path {self.folder} is a file, not a folder")
        self.glob = glob
        self.pattern = re.compile(frame_pattern) if frame_pattern else None
        self.poll, self.poll_interval_s = poll, poll_interval_s
        self.settle_s, self.give_up_s, self.reorder_s = settle_s, give_up_s, reorder_s
        self.idle_timeout_s, self.end_marker, self.existing = idle_timeout_s, end_marker, existing
        self.tick_s, self.max_ready = tick_s, max(1, max_ready)
        self.gone_timeout_s = gone_timeout_s
        self._gone_since: float | None = None  # when the folder was found missing
        self._looked_at = -1e9  # when the folder's presence was last checked
        self.clock, self.reader = clock, reader
        self._observer_factory = observer_factory
        self._observer = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._tally = Tally()
        self._pending: dict[str, _Pending] = {}
        self._ready: dict[int, _Ready] = {}
        self._done: set[str] = set()
        self._numbers: set[int] = set()  # frame numbers that produced a readable file
        self._gone: set[int] = set()  # frame numbers whose only file was skipped
        self._next: int | None = None
        self._series: tuple[tuple[int, ...], np.dtype] | None = None
        self._end_seen = False
        self._last_activity = 0.0
        self.finish_reason: str | None = None

    # ---- Adapter ------------------------------------------------------------------------------
    def describe(self) -> str:
        how = f"polling every {self.poll_interval_s:g} s" if self.poll else "inotify"
        return f"watch {self.folder} ({self.glob}, {how})"

    def lost(self) -> dict[int, str]:
        """Frame numbers skipped since the last call (the engine records them as gaps of that reason)."""
        return self._tally.lost()

    def counters(self) -> dict[str, int]:
        """``received``: files taken in (read or skipped); ``rejected``: files skipped."""
        return self._tally.counters()

    def metadata(self) -> dict:
        """The frames' timestamps are their files' modification times (AdapterHooks.metadata)."""
        return {"timestamp_origin": "file modified"}

    def open(self) -> None:
        """Start following the folder (before the startup scan, so nothing slips between)."""
        from watchdog.events import FileSystemEventHandler

        events = self._events

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # runs on watchdog's thread: hand over only
                if not event.is_directory:
                    events.put((event.event_type, os.fsdecode(event.src_path), os.fsdecode(event.dest_path or "")))

        from watchdog.observers.polling import PollingObserver

        if self._observer_factory is not None:
            obs = self._observer_factory()
        elif self.poll:
            obs = PollingObserver(timeout=self.poll_interval_s)
        else:
            from watchdog.observers import Observer

            obs = Observer(timeout=0.1)
        try:
            obs.schedule(_Handler(), str(self.folder), recursive=False)
            obs.start()
        except OSError as exc:  # e.g. the inotify watch limit: polling still works
            if self.poll or self._observer_factory is not None:
                raise
            log.warning("cannot follow %s with inotify (%s): polling every %g s instead",
                        self.folder, exc, self.poll_interval_s)
            try:
                obs.stop()  # releases the inotify reader thread it made
            except Exception:  # noqa: BLE001
                pass
            self.poll = True
            obs = PollingObserver(timeout=self.poll_interval_s)
            obs.schedule(_Handler(), str(self.folder), recursive=False)
            obs.start()
        self._observer = obs
        log.info("watching %s", self.describe())

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        obs, self._observer = self._observer, None
        if obs is not None:
            obs.stop()
            obs.join(timeout=5)

    def __iter__(self) -> Iterator[Frame]:
        now = self.clock()
        self._last_activity = now
        if not self.existing:
            with os.scandir(self.folder) as it:
                self._done.update(e.path for e in it)
        else:
            self._scan(now)
            if self._pending:
                log.info("%d file(s) already in %s, taken first", len(self._pending), self.folder)
        while not self._stop.is_set():
            self._drain_events()
            now = self.clock()
            gone = self._check_folder(now)
            if gone is not None:
                self.finish_reason = gone
                log.warning("watch ends: %s", gone)
                return
            self._check_pending(now)
            ending = self._ending(now)
            yield from self._emit(now, final=ending is not None)
            if ending is not None and not self._pending and not self._ready:
                self.finish_reason = ending
                log.info("watch ends: %s", ending)
                return

    # ---- discovery ----------------------------------------------------------------------------
    def _check_folder(self, now: float) -> str | None:
        """Every ``poll_interval_s``: is the folder still there? One that was deleted is
        reported and waited for; when it is back it is followed again (the files in it taken
        as at the start). Returns why the watch ends when it stayed away ``gone_timeout_s``."""
        if now - self._looked_at < min(self.poll_interval_s, 0.25):
            return None
        self._looked_at = now
        there = self.folder.is_dir()
        if not there and self._gone_since is None:
            self._gone_since = now
            log.warning("the watched folder %s is gone: waiting for it to come back%s", self.folder,
                        "" if self.gone_timeout_s is None else f" for {self.gone_timeout_s:g} s")
        elif there and self._gone_since is not None:
            log.warning("the watched folder %s is back after %.1f s: following it again", self.folder,
                        now - self._gone_since)
            self._gone_since = None
            self._refollow(now)
        elif not there and self.gone_timeout_s is not None and now - self._gone_since >= self.gone_timeout_s:
            return f"the watched folder {self.folder} was gone for {self.gone_timeout_s:g} s"
        return None

    def _refollow(self, now: float) -> None:
        """A new observer on the folder that came back (the old one watched the deleted one)."""
        obs, self._observer = self._observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=5)
            except Exception:  # noqa: BLE001 - it watched a folder that is gone
                pass
        self.open()
        self._scan(now)

    def _scan(self, now: float) -> None:
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    if entry.is_file():
                        self._see(entry.path, now)
        except FileNotFoundError:  # deleted while the watch runs: _check_folder reports it
            pass

    def _drain_events(self) -> None:
        try:
            ev = self._events.get(timeout=self.tick_s)
        except queue.Empty:
            return
        while True:
            kind, src, dest = ev
            now = self.clock()
            if kind == "moved":  # written under a temporary name, then renamed: complete
                self._forget(src)
                self._see(dest, now, closed=True)
            elif kind == "deleted":
                self._forget(src)
            elif kind in ("created", "modified", "closed"):
                p = self._see(src, now, closed=kind == "closed")
                if p is not None and kind == "modified":
                    p.closed = False  # written again after a close
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return

    def _see(self, path: str, now: float, closed: bool = False) -> _Pending | None:
        name = os.path.basename(path)
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(self.folder):
            return None
        if self.end_marker and name == self.end_marker:
            if not self._end_seen:
                log.info("end marker %s found", name)
            self._end_seen = True
            return None
        if name.startswith((".", "~")) or not fnmatch.fnmatch(name, self.glob) or path in self._done:
            return None
        self._last_activity = now
        p = self._pending.get(path)
        if p is None:
            number = frame_number(name, self.pattern)
            if number is None:
                self._reject(path, None, "no frame number in the file name"
                             + (f" (pattern {self.pattern.pattern!r})" if self.pattern else ""))
                return None
            p = self._pending[path] = _Pending(path, number, seen=now, changed=now, next_try=now)
        if closed:
            p.closed = True
            p.next_try = now
        return p

    def _forget(self, path: str) -> None:
        if self._pending.pop(path, None) is not None:
            log.info("%s disappeared before it was complete", os.path.basename(path))

    # ---- completion ---------------------------------------------------------------------------
    def _check_pending(self, now: float) -> None:
        for p in sorted(self._pending.values(), key=lambda q: q.number):
            if len(self._ready) >= self.max_ready and p.number > max(self._ready):
                break  # read ahead no further than max_ready frames (memory), lowest numbers first
            try:
                st = os.stat(p.path)
            except FileNotFoundError:
                self._forget(p.path)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if sig != p.sig:
                if p.sig is None:
                    # first look: a file already untouched for settle_s (by its mtime) need not wait again
                    age = min(max(0.0, time.time() - st.st_mtime), self.settle_s)
                    p.changed = now - age
                else:
                    p.changed = now
                    self._last_activity = now
                p.sig = sig
            if not (p.closed or now - p.changed >= self.settle_s) or now < p.next_try:
                continue
            try:
                arr = self.reader(p.path)
            except Exception as exc:  # noqa: BLE001 - any parse failure: retry, then skip
                p.error = f"{type(exc).__name__}: {exc}"
                p.closed = False
                p.next_try = now + max(self.settle_s, self.tick_s)
                if now - p.changed >= self.give_up_s:
                    self._reject(p.path, p.number, f"still unreadable {self.give_up_s:g} s after it last changed ({p.error})")
                else:
                    log.debug("%s not readable yet: %s", os.path.basename(p.path), p.error)
                continue
            del self._pending[p.path]
            self._done.add(p.path)
            name = os.path.basename(p.path)
            if p.number in self._numbers:
                self._reject(p.path, None, f"frame number {p.number} was already taken from another file")
            elif self._next is not None and p.number < self._next:
                self._reject(p.path, None, f"frame {p.number} arrived after frame {self._next - 1} had gone out")
            else:
                self._numbers.add(p.number)
                self._gone.discard(p.number)
                self._ready[p.number] = _Ready(arr, name, st.st_mtime, now)
                self._tally.received()

    def _ending(self, now: float) -> str | None:
        if self._end_seen:
            return f"end marker {self.end_marker} found"
        if self.idle_timeout_s is not None and now - self._last_activity >= self.idle_timeout_s:
            return f"no new file for {self.idle_timeout_s:g} s"
        return None

    # ---- ordering -----------------------------------------------------------------------------
    def _emit(self, now: float, final: bool) -> Iterator[Frame]:
        while self._ready and not self._stop.is_set():
            n = min(self._ready)
            if any(p.number < n for p in self._pending.values()):
                return  # a lower frame is still being written or retried
            r = self._ready[n]
            expected = self._next
            while expected is not None and expected in self._gone:
                expected += 1  # skipped files: their numbers will not come
            if not (n == expected or (self._next is None and n == 0) or final or now - r.since >= self.reorder_s):
                return  # give a missing predecessor a moment to appear
            del self._ready[n]
            if expected is not None and n > expected:
                log.info("frame(s) %d..%d never appeared in %s", expected, n - 1, self.folder)
            self._next = n + 1
            arr = r.array
            if self._series is None:
                self._series = (arr.shape, arr.dtype)
            elif (arr.shape, arr.dtype) != self._series:
                shape, dtype = self._series
                self._reject(os.path.join(self.folder, r.name), None, f"{arr.shape[0]}x{arr.shape[1]} {arr.dtype} differs "
                             f"from the series' {shape[0]}x{shape[1]} {dtype}", counted=True, lost=n)
                continue
            yield Frame(index=n, timestamp=r.mtime, array=arr, meta={"file": r.name})

    def _reject(self, path: str, number: int | None, why: str, counted: bool = False, lost: int | None = None) -> None:
        """Skip a file for good: count it (received and rejected) and log its name. ``number``:
        its frame number when no other file supplies that frame; ``lost``: a frame number that
        is missing from the output because of this file."""
        self._pending.pop(path, None)
        self._done.add(path)
        if number is not None and number not in self._numbers:
            self._gone.add(number)
        missing = number if number is not None and number not in self._numbers else lost
        self._tally.rejected(missing, count_received=not counted)
        log.warning("skipped %s: %s", os.path.basename(path), why)


__all__ = ["WatchAdapter", "frame_number", "read_image"]
