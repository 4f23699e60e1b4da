"""``lagsplit demo``: the synthetic filament movie streamed live through the engine,
scored against its ground truth next to a causal 16-frame running median."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from lagsplit.adapters.synthetic import SyntheticAdapter
from lagsplit.engine.shedding import status_counts, summary

from .app import build_run, execute
from .benchmarks_md import machine
from .config import Config
from .figure import panel_figure
from .metrics import nrmse, running_median
from .run_file import open_run

# The embedded default the demo runs with (configs/demo.toml is the same, as a file).
DEMO_DEFAULTS: dict = {
    "source": {"kind": "synthetic", "scene": "filaments", "frames": 300, "size": 128, "seed": 0, "fps": 10.0},
    "train": {"mode": "slack", "min_steps_per_frame": 0, "max_steps_per_frame": 4, "warmup_steps": 60},
    "output": {"path": "out/demo.h5", "components": True},
}


def score(h5_path: str | Path, scene, window: int = 16) -> dict:
    """Slow-component NRMSE of the run and of a running median, on the run's non-warm-up frames."""
    with open_run(h5_path) as f:
        slow = f["slow"][:]
        index = f["frames/index"][:]
        warm = f["frames/warmup"][:].astype(bool)
    keep = ~warm
    if not keep.any():
        return {"frames": 0}
    idx = index[keep]
    median = running_median(scene.movie, window)
    return {
        "frames": int(keep.sum()),
        "first": int(idx[0]),
        "last": int(idx[-1]),
        "lagsplit": nrmse(slow[keep], scene.slow[idx]),
        "median": nrmse(median[idx], scene.slow[idx]),
        "window": window,
    }


def cpu_line(cfg: Config) -> str:
    """The processor the demo runs on and what the networks compute in there."""
    from lagsplit.engine.nets import precision_label

    m = cfg.model
    return f"{machine().split(';')[0]}; networks in {precision_label(m.precision, m.device)}"


def keeping_up_line(size: int, fps: float, latency_ms: np.ndarray, status) -> str:
    """Whether the live demo kept up: every frame processed, latency p99 within the engine's
    bound, and what was skipped to hold it."""
    p50, p99 = np.percentile(latency_ms, [50, 99])
    bound = status.max_latency_ms
    kept = status.dropped == 0 and (not bound or p99 <= bound)
    shed = summary(status_counts(status))
    verdict = "[green]kept up[/]" if kept else (
        f"[yellow]fell behind[/] (latency p99 over the {bound:g} ms bound)" if bound and p99 > bound
        else "[yellow]fell behind[/]")
    return (f"{size}x{size} at {fps:g} frames/s: {verdict}, latency p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
            f"{status.dropped} dropped" + (f"; skipped {shed} to hold {bound:g} ms" if shed else ""))


def build_demo(cfg: Config):
    """The demo's run over its synthetic scene (app.build_run)."""
    src = cfg.source
    adapter = SyntheticAdapter(src.scene, frames=src.frames, size=src.size, seed=src.seed, fps=src.fps)
    return build_run(cfg, adapter=adapter)


def run_demo(cfg: Config, console: Console, png: Path, run=None) -> dict:
    """Stream the scene through ``run`` (built here when None), then score and draw it."""
    run = run or build_demo(cfg)
    adapter = run.engine.adapter
    console.print(f"[bold]lagsplit demo[/]: {adapter.describe()} -> {cfg.output.path}")
    console.print(f"on {cpu_line(cfg)}")
    status = execute(run, console=console)
    console.print(f"run {status.state.value}: {status.processed} frames, {status.train_steps} training steps, "
                  f"{status.dropped} dropped, device {status.device}")
    if status.error:
        console.print(f"[red]error: {status.error}[/]")
    with open_run(cfg.output.path) as f:
        lat = f["frames/latency_ms"][:]
    src = cfg.source
    if len(lat) and src.fps:
        console.print(keeping_up_line(src.size, src.fps, lat, status))
    with open_run(cfg.output.path) as f:
        idx = f["frames/index"][:]
        panel_figure(f["raw"][:] if "raw" in f else adapter.scene.movie[idx], f["slow"][:], f["fast"][:], png)
    s = score(cfg.output.path, adapter.scene)
    console.print(f"wrote {cfg.output.path} and {png}")
    if s["frames"]:
        better = "better" if s["lagsplit"] < s["median"] else "worse"
        console.print(
            f"slow-component error (NRMSE vs ground truth, frames {s['first']}-{s['last']}, {s['frames']} after warm-up):\n"
            f"  lagsplit                      {s['lagsplit']:.3f}\n"
            f"  running median ({s['window']} frames)    {s['median']:.3f}\n"
            f"  lagsplit is {better} by {abs(1 - s['lagsplit'] / s['median']) * 100:.0f}%"
        )
    else:
        console.print("[yellow]every frame was still in warm-up: run longer (--set source.frames=...)[/]")
    return s
