"""What a live adapter counts itself: frames received, frames rejected, and the frame
numbers it rejected (so the engine can record those gaps as "rejected", not "missing")."""
from __future__ import annotations

import threading


class Tally:
    """Thread-safe counts, read by the engine through the adapter's ``counters()`` and ``lost()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {"received": 0, "rejected": 0}
        self._lost: dict[int, str] = {}

    def received(self) -> None:
        with self._lock:
            self._counts["received"] += 1

    def rejected(self, frame: int | None = None, count_received: bool = True) -> int:
        """Count one rejected item (also as received unless it was counted already); ``frame``:
        the frame number now missing from the output. Returns the rejected count so far."""
        with self._lock:
            if count_received:
                self._counts["received"] += 1
            self._counts["rejected"] += 1
            if frame is not None:
                self._lost[frame] = "rejected"
            return self._counts["rejected"]

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def lost(self) -> dict[int, str]:
        """Frame numbers rejected since the last call."""
        with self._lock:
            out, self._lost = self._lost, {}
        return out
