"""Temporal features of the slow stage: per-pixel causal statistics of the recent frames
over several windows, computed once when a frame arrives and stored in the ring beside
it, so that training pairs read them back for free.

The statistic is the clipped mean: the mean of the window's values that lie within
``-4 s .. +clip s`` of its median, where ``s`` is the noise level estimated from the
lower half of the values (median minus lower quartile, robust to bright spots) and
smoothed over 7x7 px. Spots that pass by are cut out like in a median, but the kept
values are averaged, so the noise falls as 1/sqrt(n) and integer camera counts do not
quantise the estimate.

Long windows average the noise away, short ones follow changes. The slow network sees
them all, starts from the longest (``model.slow_skip``) and learns the spatial
denoising and the corrections on top. No window reaches back across a sudden change
(the ring's segments).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .ring import Ring, sort_over_time, sorted_median, temporal_median

NOISE_SMOOTH = 7  # px, box over which the per-pixel noise level is averaged
REFRESH_DIV = 8  # a window of n frames re-sorts for its median and bounds every n // 8 frames
SORT_MAX = 32  # the bounds of a longer window come from this many of its frames, evenly strided
LOW_CLIP = 4.0  # dark outliers kept down to median - 4 s (spots are bright)
MAX_SETTLE_BLUR = 2.0  # px, the widest blur of a few-frame statistic


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """A new (H, W) plane: ``img`` blurred by a separable Gaussian of ``sigma`` px, edges
    reflected (a copy when there is nothing to blur)."""
    r = min(int(3 * sigma + 0.5), img.shape[0] - 1, img.shape[1] - 1)
    if sigma <= 0 or r < 1:
        return img.clone()
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(img[None, None], (r, r, r, r), mode="reflect")
    out = F.conv2d(out, k.reshape(1, 1, 1, -1))
    return F.conv2d(out, k.reshape(1, 1, -1, 1))[0, 0]


def settle_sigma(n: int, blur: float) -> float:
    """Blur (px) for a statistic of ``n`` frames: its noise falls as 1/sqrt(n), so does the blur."""
    return min(MAX_SETTLE_BLUR, blur / max(n, 1) ** 0.5) if blur > 0 else 0.0


def clip_bounds(stack: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(median, low bound, high bound, noise level) of a window (n >= 4 values over dim 0)."""
    n = stack.shape[0]
    ordered = sort_over_time(stack)
    med = sorted_median(ordered)
    q25 = ordered[(n - 1) // 4]
    var = ((med - q25) / 0.6745).square()
    var = F.avg_pool2d(var[None, None], NOISE_SMOOTH, stride=1, padding=NOISE_SMOOTH // 2,
                       count_include_pad=False)[0, 0]
    s = var.sqrt().clamp_min(1e-6)
    return med, med - LOW_CLIP * s, med + clip * s, s


def bounded_sums(chunks: list[torch.Tensor], lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count, per pixel, of the values within [lo, hi] over the frames of ``chunks``
    (each (n, H, W))."""
    total, kept = torch.zeros_like(lo), torch.zeros_like(lo)
    for c in chunks:
        keep = (c >= lo) & (c <= hi)
        total += torch.where(keep, c, 0.0).sum(dim=0)
        kept += keep.sum(dim=0)
    return total, kept


def bounded_mean(chunks: list[torch.Tensor], lo: torch.Tensor, hi: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Mean over the frames of ``chunks`` of the values within [lo, hi] per pixel;
    ``fallback`` where none is."""
    total, kept = bounded_sums(chunks, lo, hi)
    return torch.where(kept > 0, total / kept.clamp_min(1), fallback)


def clipped_mean(stack: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over dim 0 of the values within ``-4 s .. +clip s`` of the median, and the noise
    level ``s`` (see module doc). Fewer than 4 values: their median, and a zero noise level."""
    if stack.shape[0] < 4:
        med = temporal_median(stack)
        return med, torch.zeros_like(med)
    med, lo, hi, s = clip_bounds(stack, clip)
    return bounded_mean([stack], lo, hi, med), s


def _for_bounds(stack: torch.Tensor) -> torch.Tensor:
    """The frames of a window its bounds are taken from: all of them, or SORT_MAX evenly
    strided ones ending with the newest."""
    n = stack.shape[0]
    if not SORT_MAX or n <= SORT_MAX:
        return stack
    k = -(-n // SORT_MAX)
    return stack[(n - 1) % k :: k]


class TemporalFeatures:
    """Writes one plane per window in ``windows`` for each pushed position, into ring
    channels ``first_channel, first_channel + 1, ...`` (normalised units)."""

    def __init__(self, ring: Ring, first_channel: int, windows: tuple[int, ...], clip: float = 2.0) -> None:
        self.ring, self.first = ring, first_channel
        self.windows = tuple(windows)
        self.count = len(self.windows)
        self.clip = clip
        # per window: (position, segment, median, low, high, noise level) of its last sort,
        # and (position, first position, sum, count) of the values within those bounds
        self._bounds: list[tuple | None] = [None] * self.count
        self._sums: list[tuple | None] = [None] * self.count

    def longest(self) -> int:
        """Index of the smoothest plane (the longest window)."""
        return max(range(self.count), key=lambda j: self.windows[j])

    @torch.no_grad()
    def update(self, pos: int) -> None:
        """Compute the planes for the frame just pushed at ``pos`` (from the frames up to it).

        The clipped mean sorts a window (for its median and bounds) only every
        ``n // REFRESH_DIV`` frames, n the frames it holds (every frame until it holds 16),
        and a window of more than ``SORT_MAX`` frames sorts ``SORT_MAX`` of them, evenly
        strided; in between, the bounds of the last sort are kept, and the sum and count of
        the values within them are carried from frame to frame: the frame that enters is
        added, the ones that leave are taken out. A 128-frame window's bounds are then at
        most 15 frames old, against the 64 frames by which the window itself lags; the mean
        itself is taken over every frame of the window."""
        seg = self.ring.segment_at(pos)
        for j, w in enumerate(self.windows):
            start = self.ring.window_start(pos, w)
            n = pos - start + 1
            if n < 4:
                self.ring.write(self.first + j, pos, temporal_median(torch.cat(self.ring.window_chunks(pos, w))))
                continue
            b = self._bounds[j]
            if b is None or b[1] != seg or pos - b[0] >= max(1, n // REFRESH_DIV) or pos < b[0]:
                b = (pos, seg, *clip_bounds(_for_bounds(torch.cat(self.ring.window_chunks(pos, w))), self.clip))
                self._bounds[j] = b
                self._sums[j] = None
            _, _, med, lo, hi, _ = b
            total, kept = self._window_sums(j, pos, start, lo, hi)
            self.ring.write(self.first + j, pos, torch.where(kept > 0, total / kept.clamp_min(1), med))

    def _window_sums(self, j: int, pos: int, start: int, lo: torch.Tensor,
                     hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum and count, per pixel, of the values within [lo, hi] over positions start..pos:
        carried from the window ending at pos - 1 when the bounds are the same, else read
        from the ring."""
        sums = self._sums[j]
        if sums is not None and sums[0] == pos - 1 and sums[1] <= start and self.ring.holds(sums[1]):
            _, first, total, kept = sums
            for p in range(first, start):  # the frames that left the window
                x = self.ring.plane(0, p)
                keep = (x >= lo) & (x <= hi)
                total -= torch.where(keep, x, 0.0)
                kept -= keep.to(kept.dtype)
            x = self.ring.plane(0, pos)
            keep = (x >= lo) & (x <= hi)
            total += torch.where(keep, x, 0.0)
            kept += keep.to(kept.dtype)
        else:
            total, kept = bounded_sums(self.ring.window_chunks(pos, self.windows[j]), lo, hi)
        self._sums[j] = (pos, start, total, kept)
        return total, kept

    def reset(self) -> None:
        """Forget the cached bounds and sums (a new stream)."""
        self._bounds = [None] * self.count
        self._sums = [None] * self.count

    def noise(self) -> torch.Tensor | None:
        """The per-pixel noise level (normalised units) of the longest window's last sort;
        None before it holds 4 frames."""
        b = self._bounds[self.longest()]
        return None if b is None else b[5]

    def plane(self, j: int, pos: int) -> torch.Tensor:
        return self.ring.plane(self.first + j, pos)

    def settling_plane(self, pos: int, blur: float) -> torch.Tensor:
        """A new plane: the longest window's statistic at ``pos``, blurred by
        :func:`settle_sigma` of the frames it holds (few after a change or at the start)."""
        j = self.longest()
        n = pos - self.ring.window_start(pos, self.windows[j]) + 1
        return gaussian_blur(self.plane(j, pos), settle_sigma(n, blur))
