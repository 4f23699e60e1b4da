"""The ``replay`` adapter: a recorded stack played as a live stream."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from lagsplit.engine.frame import Frame

from .stack_metadata import read_acquisition
from .stacks import FrameUnreadable, Stack, open_stack
from .synthetic import ArrayStream

log = logging.getLogger("lagsplit.replay")


class ReplayAdapter(ArrayStream):
    """Plays TIFF / OME-TIFF, .npy or ``FILE.h5:/dataset`` at ``fps`` (0: as fast as possible),
    frames ``start`` up to (not including) ``stop``; ``channel`` / ``z`` / ``axes`` pick the
    plane (see adapters/stacks.py). The stack is opened and checked here; ``close()`` closes it.
    Frame timestamps are the acquisition times the file records (OME Plane DeltaT), else
    frame number x the recorded interval, else the moments the frames were played;
    ``metadata()`` gives pixel size, interval, channel name and which of these the
    timestamps are (adapters/stack_metadata.py).

    A frame a damaged stack cannot give (a file cut short by a crash, a corrupt page) is
    skipped: counted as received and rejected (``counters()``), reported to the engine as a
    rejected gap (``lost()``), and summed up in one warning when the replay ends."""

    def __init__(self, path: str, fps: float = 0.0, start: int = 0, stop: int | None = None,
                 channel: int | None = None, z: int | None = None, axes: str | None = None,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        stack = open_stack(path, channel=channel, z=z, axes=axes)
        try:
            frames = stack.frame_range(start, stop, names=("source.start", "source.stop"))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._unreadable: dict[int, str] = {}  # frame number -> why it could not be read
        self._lost: dict[int, str] = {}  # those not yet handed to the engine
        self._lock = threading.Lock()
        self._reported = False
        self.acquisition = read_acquisition(path, channel=channel, z=z)
        view = stack if len(frames) == len(stack) else _Slice(stack, frames)
        super().__init__(view, fps=fps, name=stack.description, first_index=frames.start, sleep=sleep, clock=clock,
                         times=self.acquisition.frame_times(frames))

    def metadata(self) -> dict:
        """Pixel size, frame interval and channel name the stack records, and the timestamps'
        origin (AdapterHooks.metadata)."""
        return {**self.acquisition.attrs(), **super().metadata()}

    def counters(self) -> dict[str, int]:
        """Frames played, and those the stack could not give (AdapterHooks.counters)."""
        with self._lock:
            bad = len(self._unreadable)
        return {"sent": self.sent, "received": self.sent + bad, "rejected": bad}

    def lost(self) -> dict[int, str]:
        """Frame numbers the stack could not give since the last call (AdapterHooks.lost)."""
        with self._lock:
            out, self._lost = self._lost, {}
        return out

    def __iter__(self) -> Iterator[Frame]:
        yield from super().__iter__()
        self._report(ended=True)

    def _frame(self, i: int) -> np.ndarray | None:
        try:
            return super()._frame(i)
        except FrameUnreadable as exc:
            with self._lock:
                self._unreadable[self.first_index + i] = exc.cause
                self._lost[self.first_index + i] = "rejected"
            return None

    def _report(self, ended: bool) -> None:
        """One warning, once (when the replay ended, or at close for one stopped before its
        end that skipped frames): how many frames could not be read and why, and how the file
        is damaged where that loses frames it does not list."""
        with self._lock:
            if self._reported or not (ended or self._unreadable):
                return
            self._reported = True
            bad = dict(self._unreadable)
        damage = self._stack.damage
        if bad:
            by_cause: dict[str, list[int]] = {}
            for index, cause in sorted(bad.items()):
                by_cause.setdefault(cause, []).append(index)
            causes = "; ".join(f"{cause}: frame{'s' if len(ix) > 1 else ''} {frame_ranges(ix)}"
                               for cause, ix in by_cause.items())
            extra = f"; {damage}" if damage is not None and damage not in by_cause else ""
            log.warning("%s: %d of %d frames could not be read (%s), recorded as rejected gaps%s",
                        self.name, len(bad), len(self.movie), causes, extra)
        elif damage is not None:
            log.warning("%s: %s; all %d frames it lists were read", self.name, damage, len(self.movie))

    def close(self) -> None:
        super().close()
        self._report(ended=False)
        self._stack.close()


def frame_ranges(indices: list[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9" (sorted frame numbers)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class _Slice:
    """Frames ``frames`` of a stack, numbered from 0."""

    def __init__(self, stack: Stack, frames: range) -> None:
        self.stack, self.start = stack, frames.start
        self.shape = (len(frames), *stack.shape[1:])
        self.dtype = stack.dtype
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int):
        return self.stack[self.start + i]
