"""``lagsplit inspect``: what a run wrote, read back from its HDF5 file or OME-Zarr store."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lagsplit.engine.contracts import FRAME_FLAGS
from lagsplit.engine.outputs import is_zarr_path
from lagsplit.run_file import open_run, read_gaps


def gate_summary(gate: np.ndarray) -> dict:
    """How much of the slow network's correction slow used (/frames/gate): the rows that
    used the network, the mean share over them, and how many rows had each share."""
    used = gate[np.isfinite(gate)]
    values, counts = np.unique(used, return_counts=True)
    return {"rows": int(len(used)), "mean": float(used.mean()) if len(used) else None,
            "shares": {f"{v:g}": int(n) for v, n in zip(values, counts)}}


def summarize(path: str | Path) -> dict:
    """The facts ``inspect`` prints, as a dict (also used by tests)."""
    with open_run(path) as f:
        idx = f["frames/index"][:]
        warm = f["frames/warmup"][:]
        ver = f["frames/model_version"][:]
        lat = f["frames/latency_ms"][:]
        gaps = read_gaps(f)
        n_train = min(len(f["train/loss"]), len(f["train/step"]))
        loss = f["train/loss"][:n_train]
        steps = f["train/step"][:n_train]
        lags = [int(x) for x in f.attrs["lags"]]
        flags = f["frames/flags"][:] if "frames/flags" in f else np.zeros(0, np.uint8)
        gate = f["frames/gate"][:] if "frames/gate" in f else np.zeros(0, np.float32)
        resumes = []
        if "resumes/row" in f:
            cols = ("row", "after_index", "model_version", "time")
            n = min(len(f[f"resumes/{k}"]) for k in cols)
            resumes = [{"row": int(r), "after_index": int(a), "model_version": int(v),
                        "time": _dt.datetime.fromtimestamp(float(t), _dt.UTC).isoformat(timespec="seconds")}
                       for r, a, v, t in zip(*(f[f"resumes/{k}"][:n] for k in cols))]
        last_loss = {}
        for j, lag in enumerate(lags):
            col = loss[:, j] if len(loss) else np.array([])
            col = col[np.isfinite(col)]
            last_loss[lag] = float(col[-20:].mean()) if len(col) else None
        return {
            "path": str(path),
            "format": "OME-Zarr" if is_zarr_path(path) else "HDF5",
            "frames": int(len(idx)),
            "shape": tuple(int(x) for x in f["slow"].shape[1:]),
            "input_dtype": str(f.attrs.get("input_dtype", "")),
            "component_dtype": str(f["slow"].dtype),
            "datasets": sorted(f.arrays()),
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
            "counters": f.counters(),
            "flagged": {name: int(np.count_nonzero(flags & bit)) for name, bit in FRAME_FLAGS.items()},
            "gate": gate_summary(gate),
            "resumes": resumes,
            "open_for_write": f.open_for_write,
            "whole_rows": f.whole_rows(),
            "source": str(f.attrs.get("source", "")),
            "created": str(f.attrs.get("created", "")),
            "lagsplit_version": str(f.attrs.get("lagsplit_version", "")),
            "config": f.config,
        }


def print_summary(path: str | Path, console: Console | None = None, show_config: bool = True) -> dict:
    s = summarize(path)
    c = console or Console()
    t = Table(title=f"{s['path']}", show_header=False, title_justify="left", box=None)
    t.add_column(style="bold cyan")
    t.add_column()
    t.add_row("format", s["format"])
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
    g = s["gate"]
    t.add_row("network's share", "not used (slow from statistics on every row)" if not g["rows"] else
              f"mean {g['mean']:.2f} over {g['rows']} rows using the slow network; rows by share: "
              + ", ".join(f"{k}: {n}" for k, n in g["shares"].items()))
    t.add_row("final loss", "  ".join(f"lag {k}: {'-' if v is None else f'{v:.4f}'}" for k, v in s["final_loss"].items()))
    if s["latency_ms_p50"] is not None:
        t.add_row("latency", f"p50 {s['latency_ms_p50']:.1f} ms, p99 {s['latency_ms_p99']:.1f} ms")
    t.add_row("counters", "  ".join(f"{k} {v}" for k, v in s["counters"].items()))
    flagged = [f"{v} {k}" for k, v in s["flagged"].items() if v]
    t.add_row("flagged frames", ", ".join(flagged) if flagged else "none")
    t.add_row("resumes", "none" if not s["resumes"] else "; ".join(
        f"{r['time']} after frame {r['after_index']} (row {r['row']}, model version "
        f"{'-' if r['model_version'] < 0 else r['model_version']})" for r in s["resumes"]))
    if s["open_for_write"]:
        how = ("readers trust the rows its flushed_rows counts; --resume continues it" if s["format"] == "OME-Zarr" else
               f"readers pass swmr=True, or run `lagsplit repair {s['path']}` once no run writes it")
        t.add_row("state", f"open for write: a run is writing it, or its writer was killed ({s['whole_rows']} whole "
                           f"rows); {how}")
    t.add_row("datasets", ", ".join(s["datasets"]))
    c.print(t)
    if show_config:
        c.print("[bold cyan]config[/]")
        c.print_json(json.dumps(s["config"]))
    return s
