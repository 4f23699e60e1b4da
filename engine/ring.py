"""Preallocated ring of recent frames (and the residuals each cascade stage saw).

Positions are stream positions: 0 for the first accepted frame, counting up.
Everything lives in one tensor allocated once, on the compute device.
"""
from __future__ import annotations

import functools

import torch


class Ring:
    """Holds the last ``capacity`` positions of ``channels`` planes of (H, W) float32
    (the working grid: frames binned as engine/detail.py says).

    Channel 0 is the normalised frame; channel k > 0 is the residual that stage k
    of the cascade takes as input. ``valid`` marks positions usable as training data
    (a frame with NaN or Inf is kept for display but never trained on).
    """

    def __init__(self, capacity: int, channels: int, device: torch.device | str = "cpu") -> None:
        if capacity < 2:
            raise ValueError(f"ring capacity must be at least 2 frames, got {capacity}")
        self.capacity = capacity
        self.channels = channels
        self.device = torch.device(device)
        self.count = 0  # positions pushed so far
        self.data: torch.Tensor | None = None
        # which positions hold a frame fit to train on: kept on the host like the segments
        # (bookkeeping the worker and the trainer read per frame, never the GPU)
        self.valid = torch.zeros(capacity, dtype=torch.bool)
        # Segments: a sudden change (engine/change.py) starts a new one. Windows never reach
        # back across the start of their segment and training pairs never straddle one.
        self.segment_start = 0
        self.segment = torch.zeros(capacity, dtype=torch.int64)

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self.data is None else (self.data.shape[-2], self.data.shape[-1])

    def allocate(self, shape: tuple[int, int]) -> None:
        """Allocate storage for frames of ``shape`` (H, W); done once, before the first push."""
        self.data = torch.zeros((self.channels, self.capacity, *shape), dtype=torch.float32, device=self.device)

    def push(self, frame: torch.Tensor, valid: bool = True) -> int:
        """Copy a normalised frame into the next slot; return its stream position."""
        assert self.data is not None, "allocate() before push()"
        pos = self.count
        slot = pos % self.capacity
        self.data[0, slot].copy_(frame)
        self.valid[slot] = valid
        self.segment[slot] = self.segment_start
        self.count += 1
        return pos

    def start_segment(self, pos: int) -> None:
        """Begin a new segment at ``pos`` (held positions from ``pos`` on join it)."""
        assert self.holds(pos), f"position {pos} not in ring"
        self.segment_start = pos
        for p in range(pos, self.count):
            self.segment[p % self.capacity] = pos

    def segment_of(self, positions: torch.Tensor) -> torch.Tensor:
        """Segment start of each held position (same shape as ``positions``)."""
        return self.segment[self.slots(positions.cpu())]

    def segment_at(self, pos: int) -> int:
        """Segment start of one held position."""
        return int(self.segment[pos % self.capacity])

    def window_start(self, pos: int, window: int) -> int:
        """First position of the ``window`` ending at ``pos``: held, and within its segment."""
        return max(self.oldest(), pos - window + 1, self.segment_at(pos))

    def clear(self) -> None:
        """Forget every position (the storage stays allocated)."""
        self.count = 0
        self.segment_start = 0
        self.valid.zero_()
        self.segment.zero_()

    def oldest(self) -> int:
        """Oldest position still held."""
        return max(0, self.count - self.capacity)

    def holds(self, pos: int) -> bool:
        return self.oldest() <= pos < self.count

    def slots(self, positions: torch.Tensor) -> torch.Tensor:
        return torch.remainder(positions, self.capacity)

    def plane(self, channel: int, pos: int) -> torch.Tensor:
        """A view of one stored plane (H, W)."""
        assert self.data is not None and self.holds(pos), f"position {pos} not in ring"
        return self.data[channel, pos % self.capacity]

    def gather(self, channel: int, positions: torch.Tensor) -> torch.Tensor:
        """Planes at ``positions`` (any shape P) -> (*P, H, W)."""
        assert self.data is not None
        flat = self.slots(positions.reshape(-1).to(self.device))
        out = self.data[channel].index_select(0, flat)
        return out.reshape(*positions.shape, *out.shape[-2:])

    def write(self, channel: int, pos: int, plane: torch.Tensor) -> None:
        assert self.data is not None and self.holds(pos)
        self.data[channel, pos % self.capacity].copy_(plane)

    def window_chunks(self, pos: int, window: int) -> list[torch.Tensor]:
        """Channel 0 over the ``window`` positions ending at ``pos``, within its segment, as
        views into the storage (one or two contiguous runs of slots, oldest first): nothing
        is copied."""
        assert self.data is not None
        a, b = self.window_start(pos, window) % self.capacity, pos % self.capacity
        if a <= b:
            return [self.data[0, a : b + 1]]
        return [self.data[0, a:], self.data[0, : b + 1]]


def temporal_median(stack: torch.Tensor) -> torch.Tensor:
    """Median over dim 0, averaging the two middle values for an even count (as numpy does)."""
    n = stack.shape[0]
    if n == 1:
        return stack[0]
    return sorted_median(sort_over_time(stack))


def sort_over_time(stack: torch.Tensor) -> torch.Tensor:
    """``stack`` (n, H, W) sorted along dim 0 (its values finite: the ring only holds such).

    On a CPU, up to :data:`NETWORK_MAX` frames go through a sorting network (Batcher's
    odd-even merge sort): whole planes compared and swapped with elementwise min / max,
    much faster than ``torch.sort``, which sorts each pixel's few values on its own.
    Elsewhere (longer stacks, a GPU, where one sort kernel beats hundreds of small ones)
    the sort runs on a copy with time as the contiguous axis, faster on a CPU than
    sorting along the strided dim 0."""
    n = stack.shape[0]
    if stack.device.type == "cpu" and 1 < n <= NETWORK_MAX:
        return _network_sort(stack)
    ordered = stack.reshape(n, -1).t().contiguous().sort(dim=1).values
    return ordered.t().reshape(stack.shape)


NETWORK_MAX = 64  # frames up to which a CPU sort goes through the sorting network


@functools.cache
def _comparators(n: int) -> tuple[tuple[int, int], ...]:
    """The compare-and-swap pairs (i < j: the smaller value goes to i) of Batcher's odd-even
    merge sort of ``n`` values, ``n`` a power of two, in the order they apply."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


def _network_sort(stack: torch.Tensor) -> torch.Tensor:
    n = stack.shape[0]
    m = 1 << (n - 1).bit_length()
    # padded up to a power of two with planes of +inf, which stay at the end: a comparison
    # with one of them swaps nothing and is skipped
    planes = list(stack.clone().unbind(0))
    spare = torch.empty_like(planes[0])
    for i, j in _comparators(m):
        if j >= n:
            continue
        torch.minimum(planes[i], planes[j], out=spare)
        torch.maximum(planes[i], planes[j], out=planes[j])
        planes[i], spare = spare, planes[i]
    return torch.stack(planes)


def sorted_median(ordered: torch.Tensor) -> torch.Tensor:
    """Median over dim 0 of values already sorted along it (the two middle ones averaged)."""
    n = ordered.shape[0]
    if n % 2:
        return ordered[n // 2]
    return 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
