"""The live console monitor: what a person watching the acquisition needs at a glance.

It reads only the engine's frozen ``Status`` snapshot. On a terminal it draws a
rich ``Live`` panel with a half-block preview of the latest raw / slow / fast
frame; without a terminal it logs one plain line every few seconds.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .config import MonitorConfig
from .shedding import SHED_LABELS, status_counts, summary
from .status import Preview, RunState, Status

log = logging.getLogger("lagsplit.monitor")

_CMAPS = {
    "raw": lambda v: (v, v, v),
    "slow": lambda v: (0.15 * v, v, 0.35 * v),
    "fast": lambda v: (v, 0.2 * v, v),
}


def _fmt(v: float, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}{unit}"


def _resize(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape
    height = max(2, int(round(h * width / w / 2)) * 2)
    ys = (np.arange(height) * h / height).astype(int)
    xs = (np.arange(width) * w / width).astype(int)
    return img[np.ix_(ys, xs)]


def half_blocks(img: np.ndarray, width: int, cmap: str = "raw", lo: float | None = None, hi: float | None = None) -> Text:
    """Draw an image with '▀' characters: each character shows two pixels (fg top, bg bottom)."""
    img = _resize(np.nan_to_num(np.asarray(img, np.float32)), width)
    lo = float(np.percentile(img, 1)) if lo is None else lo
    hi = float(np.percentile(img, 99.5)) if hi is None else hi
    v = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = (np.stack(_CMAPS[cmap](v), axis=-1) * 255).astype(int)
    text = Text()
    for r in range(0, rgb.shape[0], 2):
        for c in range(rgb.shape[1]):
            top, bot = rgb[r, c], rgb[r + 1, c]
            text.append("▀", Style(color=f"rgb({top[0]},{top[1]},{top[2]})", bgcolor=f"rgb({bot[0]},{bot[1]},{bot[2]})"))
        text.append("\n")
    return text


def render(st: Status, width: int = 24) -> Group:
    """The monitor's panel for one snapshot."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", justify="right")
    t.add_column()
    t.add_column(style="bold cyan", justify="right")
    t.add_column()
    state = st.state.value + (f" ({st.reason.value})" if st.reason else "")
    t.add_row("state", state, "device", st.device)
    t.add_row("in", f"{_fmt(st.in_rate_hz)} fr/s ({st.received} received)", "out",
              f"{_fmt(st.out_rate_hz)} fr/s ({st.processed} processed)")
    t.add_row("queue", f"{st.queue_depth}/{st.queue_capacity}  {keeping_up(st)}", "latency",
              f"p50 {_fmt(st.latency_p50_ms, ' ms')}  p99 {_fmt(st.latency_p99_ms, ' ms')}"
              + ("" if st.live else "  (replay: includes queueing)"))
    if st.total:
        t.add_row("progress", progress(st), "", "")
    if st.max_latency_ms:
        t.add_row("shedding", shedding(st) or "[green]nothing[/]", "bound", f"latency {st.max_latency_ms:g} ms")
    t.add_row("dropped", _count(st.dropped), "rejected",
              f"{_count(st.rejected)}   gaps {st.gaps}   non-finite {_count(st.nonfinite)}   changes {st.changes}")
    t.add_row("flagged", f"blank {_count(st.blank)}   saturated {_count(st.saturated)}", "file",
              f"sink errors {_count(st.sink_errors)}   not processed {_count(st.not_processed)}   resumes {st.resumes}")
    losses = "  ".join(f"L{lag}: {_fmt(loss, digits=3)}" for lag, loss in zip(st.lags, st.loss))
    t.add_row("training", f"{_fmt(st.train_rate_hz)} steps/s, {_count(st.train_skipped)} skipped", "loss", losses)
    t.add_row("model", f"v{st.model_version}" + ("  [yellow]warm-up[/]" if st.warmup else "")
              + f"  gate {gate_text(st.gate)}", "frame",
              "-" if st.last_index is None else str(st.last_index))
    parts: list = [t]
    if st.waiting:
        parts.append(Text(st.waiting, style="bold yellow"))
    if st.error:
        parts.append(Text(f"error: {st.error}", style="bold red"))
    if st.preview is not None:
        pv: Preview = st.preview
        lo = float(np.percentile(pv.raw, 1))
        hi = float(np.percentile(pv.raw, 99.5))
        fhi = float(np.percentile(np.abs(pv.fast), 99.5)) or 1.0
        grid = Table.grid(padding=(0, 1))
        for _ in range(3):
            grid.add_column()
        grid.add_row(Text("raw", style="bold"), Text("slow", style="bold green"), Text("fast", style="bold magenta"))
        grid.add_row(half_blocks(pv.raw, width, "raw", lo, hi), half_blocks(pv.slow, width, "slow", lo, hi),
                     half_blocks(pv.fast, width, "fast", 0.0, fhi))
        parts.append(grid)
    return Group(Panel(Group(*parts), title=f"lagsplit · {st.source}", border_style="blue"))


def gate_text(gate: float) -> str:
    """The share of the slow network's correction in slow, e.g. "0.75" ("-": statistics only)."""
    return "-" if math.isnan(gate) else f"{gate:.2f}"


def _count(n: int) -> str:
    """A fault count: red once it is not zero, so trouble shows at a glance."""
    return f"[bold red]{n}[/]" if n else str(n)


FAULTS = ("rejected", "dropped", "not_processed", "nonfinite", "blank", "saturated", "train_skipped", "sink_errors",
          "resumes")
"""The counts the log line lists when they are not zero (the names of the file's /counters)."""


def faults(st: Status) -> str:
    """The fault counts that are not zero, e.g. "nonfinite 2, train_skipped 5" ("" when none)."""
    return ", ".join(f"{name} {getattr(st, name)}" for name in FAULTS if getattr(st, name))


def keeping_up(st: Status) -> str:
    """Whether the run keeps up with a live source (rich markup; empty for a replay as
    fast as possible, whose queue is full by design)."""
    if not st.live or not st.processed:
        return ""
    if st.dropped or st.queue_depth > st.queue_capacity // 2:
        return "[bold red]falling behind[/]"
    if st.shedding:
        return "[yellow]keeping up by skipping work[/]"
    return "[green]keeping up[/]"


def shedding(st: Status) -> str:
    """What the engine skips now to hold its latency bound, and on how many frames each part
    was skipped so far, e.g. "skipping training steps; so far training steps on 40 frames"
    ("" when nothing was)."""
    now = ", ".join(SHED_LABELS[p] for p in st.shedding)
    so_far = summary(status_counts(st))
    return "; ".join(part for part in ((f"[yellow]skipping {now}[/]" if now else ""),
                                       (f"so far {so_far}" if so_far else "")) if part)


def progress(st: Status) -> str:
    """Frames done of the source's total, and the time left at the current output rate."""
    done = st.processed + st.dropped + st.rejected
    left = max(0, (st.total or 0) - done)
    eta = f", {int(left / st.out_rate_hz) // 60}:{int(left / st.out_rate_hz) % 60:02d} left" if st.out_rate_hz else ""
    return f"{done}/{st.total} ({100 * done / st.total:.0f}%){eta}"


def log_line(st: Status) -> str:
    """The plain one-line status for logs (no terminal)."""
    losses = " ".join(f"L{lag}={_fmt(loss, digits=3)}" for lag, loss in zip(st.lags, st.loss))
    shed = Text.from_markup(shedding(st)).plain
    return (
        f"frames {st.processed}/{st.received} in {_fmt(st.in_rate_hz)}/s out {_fmt(st.out_rate_hz)}/s "
        f"queue {st.queue_depth}/{st.queue_capacity} latency p50 {_fmt(st.latency_p50_ms)} ms p99 {_fmt(st.latency_p99_ms)} ms "
        f"dropped {st.dropped} rejected {st.rejected} gaps {st.gaps} | train {_fmt(st.train_rate_hz)} steps/s "
        f"v{st.model_version}{' warm-up' if st.warmup else ''} gate {gate_text(st.gate)} loss {losses} | {st.device}"
        + (f" | {progress(st)}" if st.total else "")
        + (f" | {shed}" if shed else "")
        + (f" | {st.waiting}" if st.waiting else "")
        + (f" | faults: {faults(st)}" if faults(st) else "")
    )


class Monitor:
    """Shows ``status()`` until ``done()`` is true. Runs on the calling (main) thread."""

    def __init__(self, status: Callable[[], Status], cfg: MonitorConfig | None = None,
                 console: Console | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.status = status
        self.cfg = cfg or MonitorConfig()
        self.console = console or Console(stderr=True)
        self.sleep = sleep

    @property
    def mode(self) -> str:
        if self.cfg.mode != "auto":
            return self.cfg.mode
        return "live" if self.console.is_terminal else "log"

    def run(self, done: Callable[[], bool]) -> None:
        mode = self.mode
        if mode == "off":
            while not done():
                self.sleep(0.1)
            return
        if mode == "live":
            period = 1.0 / self.cfg.refresh_hz
            with Live(render(self.status(), self.cfg.preview_width), console=self.console,
                      refresh_per_second=self.cfg.refresh_hz, transient=False) as live:
                while not done():
                    self.sleep(period)
                    live.update(render(self.status(), self.cfg.preview_width))
                live.update(render(self.status(), self.cfg.preview_width))
            return
        last = -math.inf
        while not done():
            now = time.monotonic()
            if now - last >= self.cfg.log_every_s:
                st = self.status()
                if st.state == RunState.RUNNING:
                    log.info(log_line(st))
                last = now
            self.sleep(0.1)
        log.info(log_line(self.status()))
