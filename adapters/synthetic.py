"""Arrays played as live streams: :class:`ArrayStream` (the player of the replay and
synthetic adapters) and the ``synthetic`` adapter, a generated scene of
:mod:`~lagsplit.adapters.scenes` with its ground truth."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from lagsplit.engine.frame import Frame

from .scenes import make_scene


class ArrayStream:
    """Plays a (T, H, W) array (or anything indexable frame by frame) as a live stream: frames at ``fps`` (0: as fast as possible).

    ``sleep`` and ``clock`` can be injected: tests pass a fake pair and never sleep for real
    (tests/test_array_stream.py). ``times``: the acquisition time of each frame (seconds), used
    as its timestamp; without them a frame's timestamp is when it was played (``metadata()``
    says which).
    """

    def __init__(self, movie: np.ndarray, fps: float = 0.0, name: str = "array", first_index: int = 0,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 times: np.ndarray | None = None) -> None:
        if len(movie.shape) != 3:
            raise ValueError(f"{name}: expected a (T, H, W) stack, got shape {movie.shape}")
        if times is not None and len(times) != len(movie):
            raise ValueError(f"{name}: {len(times)} acquisition times for {len(movie)} frames")
        self.times = times
        self.movie = movie
        self.fps = fps
        self.name = name
        self.first_index = first_index
        self.clock = clock
        self._stopped = False
        self._sleep = sleep
        self.sent = 0

    @property
    def live(self) -> bool:
        """Paced at ``fps`` (contracts.AdapterHooks.live)."""
        return self.fps > 0

    @property
    def total(self) -> int:
        """Frames the stream delivers (contracts.AdapterHooks.total)."""
        return len(self.movie)

    def describe(self) -> str:
        t, h, w = self.movie.shape
        rate = f"{self.fps:g} fps" if self.fps else "as fast as possible"
        return f"{self.name} ({t} frames of {h}x{w} {self.movie.dtype}, {rate})"

    def open(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._stopped = True

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent}

    def metadata(self) -> dict:
        """What the frames' timestamps are (contracts.AdapterHooks.metadata): the given
        acquisition times, else the moments the frames were played."""
        return {"timestamp_origin": "acquisition" if self.times is not None else "played"}

    def _wait_until(self, t: float) -> None:
        while not self._stopped:
            left = t - self.clock()
            if left <= 0:
                return
            (self._sleep or time.sleep)(min(left, 0.05))

    def __iter__(self) -> Iterator[Frame]:
        t0 = self.clock()
        wall0 = time.time()
        for i in range(len(self.movie)):
            if self._stopped:
                return
            if self.fps:
                self._wait_until(t0 + i / self.fps)
                if self._stopped:
                    return
            ts = float(self.times[i]) if self.times is not None else wall0 + (i / self.fps if self.fps else self.clock() - t0)
            arr = self._frame(i)
            if arr is None:
                continue
            self.sent += 1
            yield Frame(index=self.first_index + i, timestamp=ts, array=arr, meta={"source": self.name})

    def _frame(self, i: int) -> np.ndarray | None:
        """Frame ``i`` of the movie; None skips it (a subclass that cannot read it records why)."""
        return np.asarray(self.movie[i])


class SyntheticAdapter(ArrayStream):
    """The ``synthetic`` adapter: a generated scene played as a live stream; keeps its ground truth."""

    def __init__(self, scene: str = "filaments", frames: int = 300, size: int = 128, seed: int = 0,
                 fps: float = 0.0, **kw) -> None:
        self.scene = make_scene(scene, frames=frames, size=size, seed=seed)
        super().__init__(self.scene.movie, fps=fps, name=f"synthetic:{scene}", **kw)
