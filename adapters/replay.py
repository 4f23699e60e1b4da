"""The ``replay`` adapter: a recorded stack played as a live stream."""
from __future__ import annotations

import time
from collections.abc import Callable

from .stacks import open_stack
from .synthetic import ArrayStream


class ReplayAdapter(ArrayStream):
    """Plays TIFF / OME-TIFF, .npy or ``FILE.h5:/dataset`` at ``fps`` (0: as fast as possible)."""

    def __init__(self, path: str, fps: float = 0.0, start: int = 0, stop: int | None = None,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        stack, desc = open_stack(path)
        self._stack = stack
        n = len(stack)
        stop = n if stop is None else min(stop, n)
        view = _Slice(stack, start, stop) if (start or stop != n) else stack
        super().__init__(view, fps=fps, name=desc, first_index=start, sleep=sleep, clock=clock)

    def close(self) -> None:
        super().close()
        closer = getattr(self._stack, "close", None) or getattr(getattr(self._stack, "file", None), "close", None)
        if callable(closer):
            closer()


class _Slice:
    def __init__(self, stack, start: int, stop: int) -> None:
        self.stack, self.start = stack, start
        self.shape = (max(0, stop - start), *stack.shape[1:])
        self.dtype = stack.dtype
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int):
        return self.stack[self.start + i]
