"""``DIR/batch.csv``: a row per output of the batch, rewritten (atomically) as each one
ends, so that a batch stopped part way still says what finished."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("recording", "output", "status", "frames", "seconds", "warmup_frames", "error")
STATUSES = ("ok", "failed", "skipped", "cancelled", "pending")
"""``ok``: written in this batch; ``skipped``: finished by an earlier batch, left as it
was; ``cancelled``: stopped by Ctrl-C (its partial output is continued by the next run);
``pending``: not finished yet."""


@dataclass
class Row:
    recording: str
    output: str
    status: str = "pending"
    frames: int = 0
    seconds: float = 0.0
    warmup_frames: int = 0
    error: str = ""


def write_summary(path: Path, rows: list[Row]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r.recording, r.output, r.status, r.frames, f"{r.seconds:.2f}", r.warmup_frames,
                        " ".join(r.error.split())])
    os.replace(tmp, path)


def read_summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
