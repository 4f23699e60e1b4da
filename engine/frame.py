"""The unit that flows from an adapter into the engine, and what comes out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Frame:
    """One acquisition frame.

    ``index`` is the acquisition's frame number (gaps in it are real gaps),
    ``timestamp`` the acquisition time in seconds (epoch or stream-relative),
    ``array`` the (H, W) image in its native dtype, ``meta`` free metadata.
    ``arrival`` is set by the engine: monotonic seconds when it was received.
    """

    index: int
    timestamp: float
    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    arrival: float = 0.0


@dataclass(slots=True)
class Decomposition:
    """Components of one frame, in the units of the input (ADU or counts).

    ``slow + fast == raw`` holds to float precision; when per-lag components
    are present, ``sum(components.values()) + residual == raw`` too.
    """

    index: int
    timestamp: float
    raw: np.ndarray
    slow: np.ndarray
    fast: np.ndarray
    components: dict[int, np.ndarray] | None
    residual: np.ndarray | None
    model_version: int
    warmup: bool
    latency_ms: float = 0.0
    flags: int = 0  # what was wrong with the frame (contracts.FRAME_FLAGS: non-finite, blank, saturated)
    shed: int = 0  # optional work skipped for it to hold the latency bound (engine/shedding.SHED_BITS)
    gate: float = float("nan")  # share of the slow network's correction in slow (NaN: no network used)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays it holds: what it keeps alive while queued, about what a row writes."""
        arrays = (self.raw, self.slow, self.fast, self.residual, *(self.components or {}).values())
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def stored(plane: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``plane`` in the type a sink stores it in. float32 to float16 goes through torch's
    vectorised conversion, the same values as numpy's (round to nearest even) at a tenth of
    its time (a 2048 x 2048 plane: about 1 ms against 10 on a 2-core CPU)."""
    if plane.dtype == dtype:
        return plane
    if dtype == np.float16 and plane.dtype == np.float32 and plane.flags.writeable:
        import torch  # noqa: PLC0415 - loaded already by the engine that made the plane

        return torch.from_numpy(plane).to(torch.float16).numpy()
    with np.errstate(over="ignore"):  # past float16's range is inf, as HDF5 stores it too
        return plane.astype(dtype)
