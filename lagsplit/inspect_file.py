"""``lagsplit inspect``: what a run wrote, read back from its HDF5 file."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table

from lagsplit.engine.hdf5_sink import GAP_REASONS, read_counters


def summarize(path: str | Path) -> dict:
    """The facts ``inspect`` prints, as a dict (also used by tests)."""
    with h5py.File(path, "r", swmr=True) as f:
        idx = f["frames/index"][:]
        warm = f["frames/warmup"][:]
        ver = f["frames/model_version"][:]
        lat = f["frames/latency_ms"][:]
        gaps = [
            {"first_index": int(a), "count": int(c), "reason": GAP_REASONS[int(r)]}
            for a, c, r in zip(f["gaps/first_index"][:], f["gaps/count"][:], f["gaps/reason"][:])
        ]
        loss = f["train/loss"][:]
        steps = f["train/step"][:]
        lags = [int(x) for x in f.attrs["lags"]]
        last_loss = {}
        for j, lag in enumerate(lags):
            col = loss[:, j] if len(loss) else np.array([])
            col = col[np.isfinite(col)]
            last_loss[lag] = float(col[-20:].mean()) if len(col) else None
        return {
            "path": str(path),
            "frames": int(len(idx)),
            "shape": tuple(int(x) for x in f["slow"].shape[1:]),
            "input_dtype": str(f.attrs.get("input_dtype", "")),
            "component_dtype": str(f["slow"].dtype),
            "datasets": sorted(_datasets(f)),
            "lags": lags,
            "first_index": int(idx[0]) if len(idx) else None,
            "last_index": int(idx[-1]) if len(idx) else None,
            "gaps": gaps,
            "warmup_frames": int(warm.sum()),
            "model_versions": (int(ver.min()), int(ver.max())) if len(ver) else None,
            "train_steps": int(steps[-1]) if len(steps) else 0,
            "final_loss": last_loss,
            "latency_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if len(lat) else None,
            "counters": read_counters(f),
            "source": str(f.attrs.get("source", "")),
            "created": str(f.attrs.get("created", "")),
            "lagsplit_version": str(f.attrs.get("lagsplit_version", "")),
            "config": json.loads(f.attrs.get("config", "{}")),
        }


def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def print_summary(path: str | Path, console: Console | None = None, show_config: bool = True) -> dict:
    s = summarize(path)
    c = console or Console()
    t = Table(title=f"{s['path']}", show_header=False, title_justify="left", box=None)
    t.add_column(style="bold cyan")
    t.add_column()
    t.add_row("source", s["source"])
    t.add_row("created", f"{s['created']} (lagsplit {s['lagsplit_version']})")
    t.add_row("frames", f"{s['frames']} (acquisition index {s['first_index']} .. {s['last_index']})")
    t.add_row("shape", f"{s['shape'][0]} x {s['shape'][1]} px, input {s['input_dtype']}, components {s['component_dtype']}")
    t.add_row("lags", ", ".join(map(str, s["lags"])))
    gaps = s["gaps"]
    missing = sum(g["count"] for g in gaps)
    t.add_row("gaps", "none" if not gaps else f"{len(gaps)} gap(s), {missing} frame(s) missing: " + "; ".join(
        f"{g['count']} from {g['first_index']} ({g['reason']})" for g in gaps[:8]) + (" ..." if len(gaps) > 8 else ""))
    t.add_row("warm-up frames", str(s["warmup_frames"]))
    mv = s["model_versions"]
    t.add_row("model versions", "-" if mv is None else f"{mv[0]} .. {mv[1]} ({s['train_steps']} training steps)")
    t.add_row("final loss", "  ".join(f"lag {k}: {'-' if v is None else f'{v:.4f}'}" for k, v in s["final_loss"].items()))
    if s["latency_ms_p50"] is not None:
        t.add_row("latency", f"p50 {s['latency_ms_p50']:.1f} ms, p99 {s['latency_ms_p99']:.1f} ms")
    t.add_row("counters", "  ".join(f"{k} {v}" for k, v in s["counters"].items()))
    t.add_row("datasets", ", ".join(s["datasets"]))
    c.print(t)
    if show_config:
        c.print("[bold cyan]config[/]")
        c.print_json(json.dumps(s["config"]))
    return s
