"""The ``replay`` adapter: a recorded stack played as a live stream."""
from __future__ import annotations

import time
from collections.abc import Callable

from .stack_metadata import read_acquisition
from .stacks import Stack, open_stack
from .synthetic import ArrayStream


class ReplayAdapter(ArrayStream):
    """Plays TIFF / OME-TIFF, .npy or ``FILE.h5:/dataset`` at ``fps`` (0: as fast as possible),
    frames ``start`` up to (not including) ``stop``; ``channel`` / ``z`` / ``axes`` pick the
    plane (see adapters/stacks.py). The stack is opened and checked here; ``close()`` closes it.
    Frame timestamps are the acquisition times the file records (OME Plane DeltaT), else
    frame number x the recorded interval; ``metadata()`` gives pixel size, interval and
    channel name (adapters/stack_metadata.py)."""

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
        self.acquisition = read_acquisition(path, channel=channel, z=z)
        view = stack if len(frames) == len(stack) else _Slice(stack, frames)
        super().__init__(view, fps=fps, name=stack.description, first_index=frames.start, sleep=sleep, clock=clock,
                         times=self.acquisition.frame_times(frames))

    def metadata(self) -> dict:
        """Pixel size, frame interval and channel name the stack records (AdapterHooks.metadata)."""
        return self.acquisition.attrs()

    def close(self) -> None:
        super().close()
        self._stack.close()


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
