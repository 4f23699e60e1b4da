"""Sudden-change detection: an illumination step, a stage jump, a refocus.

Slow is predicted from frames at least one lag old, from windows of up to 128 frames;
after a sudden change all of those describe a sample that is gone. The detector notices
the change from the frames themselves, and the cascade then starts a new segment: no
window reaches back across it, no training pair straddles it, and until the windows
have refilled slow is the statistic of the frames since the change (docs/design.md §1).

The frame is cut into 4 x 4 tiles. In each, the test statistic of frame t is the mean
of the lowest 75 % of the squared differences between the frame and the median of the
8 frames before it (the highest quarter, where spots move, is left out), divided by
its own median over the last 16 frames. The ratio of the frame is the median over the
tiles: a change must reach most of the field, so something large passing through one
part of it (a cell, a walker in a video) is not one. A sample that moves, bleaches or
blinks keeps the ratio within a few per cent of 1 (up to 1.23 on 64 x 64 scenes), a
step lifts it to 8-15, a stage jump of 7 px to 1.5-1.8. Two frames in a row above
``ratio`` make a change, dated to the first of them.

On a GPU the test statistic is copied to the host without waiting (``deferred``): the
frame's decision is taken when the next frame arrives, by which time the copy is done
(the frame's components have been read back in between). A change is then found one
frame later, dated the same; no frame waits for the device to answer.
"""
from __future__ import annotations

from collections import deque

import torch

from .ring import Ring, temporal_median

REFERENCE = 8  # frames whose median the new frame is compared with
HISTORY = 16  # past values of the statistic its level is taken from
KEEP = 0.75  # fraction of the squared differences averaged (the rest: moving spots)
TILES = 4  # tiles per side
MIN_LEVEL = 1e-3  # normalised units (the first frame's std is 1): the squared difference floor
MIN_TILE = 8  # px; smaller frames use fewer tiles
MAX_PIXELS = 1 << 12  # the statistic reads at most this many pixels per tile (evenly strided)


class ChangeDetector:
    """Feed it every pushed position (``observe``); it answers the position where a new
    segment starts when it sees a sudden change, else None."""

    def __init__(self, ring: Ring, ratio: float, deferred: bool | None = None) -> None:
        self.ring, self.ratio = ring, ratio
        self.levels: deque[torch.Tensor] = deque(maxlen=HISTORY)
        self.pending: int | None = None  # a position above the threshold, awaiting a second
        self.last_ratio = 1.0
        # decide on a frame when the next one arrives (default: on a GPU, see module doc)
        self.deferred = ring.device.type == "cuda" if deferred is None else deferred
        self._in_flight: tuple[int, torch.Tensor, torch.cuda.Event | None] | None = None

    @property
    def enabled(self) -> bool:
        return self.ratio > 0

    def reset(self) -> None:
        self.levels.clear()
        self.pending = None
        self._in_flight = None

    @torch.no_grad()
    def statistic(self, pos: int) -> torch.Tensor | None:
        """Per tile, the robust mean squared difference of ``pos`` from the median of the frames before it."""
        ring = self.ring
        first = ring.window_start(pos, REFERENCE + 1)
        if pos - first < REFERENCE:
            return None
        positions = torch.arange(first, pos)
        if not bool(ring.valid[ring.slots(positions)].all()) or not bool(ring.valid[pos % ring.capacity]):
            return None
        # the 8 frames before pos as views into the ring (no index tensor to the device)
        ref = temporal_median(torch.cat(ring.window_chunks(pos - 1, REFERENCE)))
        d2 = (ring.plane(0, pos) - ref).square()
        h, w = d2.shape
        ny, nx = max(1, min(TILES, h // MIN_TILE)), max(1, min(TILES, w // MIN_TILE))
        th, tw = h // ny, w // nx
        tiles = d2[: ny * th, : nx * tw].reshape(ny, th, nx, tw).permute(0, 2, 1, 3).reshape(ny * nx, th * tw)
        if tiles.shape[1] > MAX_PIXELS:
            tiles = tiles[:, :: tiles.shape[1] // MAX_PIXELS]
        k = max(1, int(KEEP * tiles.shape[1]))
        return torch.topk(tiles, k, dim=1, largest=False, sorted=False).values.mean(dim=1)

    def observe(self, pos: int) -> int | None:
        """Look at the frame just pushed at ``pos``; the start of a new segment, or None.
        Deferred, the answer is about the frames before ``pos``, and :meth:`launch` then
        starts the look at ``pos`` itself (after a new segment, if any, has begun)."""
        if not self.enabled:
            return None
        if self.deferred:
            if self._in_flight is None:
                return None
            at, host, done = self._in_flight
            self._in_flight = None
            if done is not None:
                done.synchronize()  # long done: the last frame's results were read back since
            return self._decide(at, host)
        stat = self.statistic(pos)
        return None if stat is None else self._decide(pos, stat.cpu())

    def launch(self, pos: int) -> None:
        """Deferred: compute the statistic of ``pos`` on the device and start its copy to
        the host; :meth:`observe` decides on it at the next frame. No-op otherwise."""
        if not self.enabled or not self.deferred:
            return
        stat = self.statistic(pos)
        if stat is None:
            return
        if stat.device.type != "cuda":
            self._in_flight = (pos, stat, None)
            return
        host = torch.empty(stat.shape, dtype=stat.dtype, pin_memory=True)
        host.copy_(stat, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self._in_flight = (pos, host, done)

    def _decide(self, pos: int, stat: torch.Tensor) -> int | None:
        """The decision on the statistic (on the host) of the frame at ``pos``."""
        if len(self.levels) < HISTORY // 2:
            self.levels.append(stat)
            return None
        level = torch.stack(list(self.levels)).median(dim=0).values
        # a floor for tiles that barely change (a blank corner; compressed video, where most
        # pixels repeat exactly): differences below ~3 % of the first frame's spread never count
        eps = max(1e-3 * float(level.mean()), MIN_LEVEL)
        self.last_ratio = float(((stat + eps) / (level + eps)).median())
        if self.last_ratio <= self.ratio:
            self.pending = None
            self.levels.append(stat)
            return None
        if self.pending is None:
            self.pending = pos  # wait for a second frame: a single odd frame is not a change
            return None
        start = self.pending
        self.reset()
        return start
