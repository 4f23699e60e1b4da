"""The batch's progress display: outputs done, running and failed, frames/s over the
cluster, and each failure as it happens. Workers report their frames as Dask events; the
display reads only what those events and the finished tasks told it."""
from __future__ import annotations

import threading
import time

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .plan import Job
from .summary import Row

SHOWN_RUNNING = 8
"""Running outputs listed by name; more are counted."""


class BatchProgress:
    def __init__(self, jobs: list[Job], console, cluster: str, enabled: bool = True, settled: str = "") -> None:
        self.console = console
        self.settled = settled  # what the plan already decided, e.g. "3 skipped, 1 failed to open"
        self.enabled = enabled and console is not None
        self.cluster = cluster
        self.total = len(jobs)
        self.frames_of = {j.name: j.frames for j in jobs}
        self.task_output = {t.key: j.name for j in jobs for t in j.tasks}
        self.running: dict[str, int] = {}  # task key -> frames its output holds now
        self.finished_frames = 0
        self.done = self.failed = self.cancelled = 0
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.live: Live | None = None

    def __enter__(self) -> BatchProgress:
        if self.enabled:
            settled = f" ({escape(self.settled)})" if self.settled else ""
            self.console.print(f"[bold]lagsplit batch[/]: {self.total} outputs to write{settled} on "
                               f"{escape(self.cluster)}")
            if self.console.is_terminal:
                self.live = Live(self.render(), console=self.console, refresh_per_second=2, get_renderable=self.render)
                self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def on_event(self, event) -> None:
        """A worker's progress (Dask event handler, on the client's event loop)."""
        _, msg = event
        with self.lock:
            if msg.get("key") in self.task_output:
                self.running[msg["key"]] = int(msg.get("processed", 0))

    def say(self, line: str) -> None:
        if self.enabled:
            self.console.print(line, soft_wrap=True)

    def finished(self, job: Job, row: Row) -> None:
        with self.lock:
            for t in job.tasks:
                self.running.pop(t.key, None)
            self.finished_frames += row.frames if row.status == "ok" else 0
            self.done += row.status == "ok"
            self.failed += row.status == "failed"
            self.cancelled += row.status == "cancelled"
        if row.status == "failed":
            self.say(f"[bold red]failed:[/] {escape(row.recording)}: {escape(row.error)}")
        elif row.status == "ok" and self.live is None:
            self.say(f"done: {escape(row.output)} ({row.frames} frames, {row.seconds:.1f} s)")

    def rate(self) -> float:
        with self.lock:
            frames = self.finished_frames + sum(self.running.values())
        return frames / max(1e-9, time.monotonic() - self.t0)

    def render(self):
        with self.lock:
            running = dict(self.running)
            done, failed, cancelled = self.done, self.failed, self.cancelled
        outputs = sorted({self.task_output[k] for k in running})
        head = Text.assemble(
            ("outputs ", "bold"), f"{done}/{self.total} done, {len(outputs)} running",
            (f", {failed} failed" if failed else "", "red"), (f", {cancelled} cancelled" if cancelled else "", "yellow"),
            f" · {self.rate():.1f} frames/s over the cluster · {time.monotonic() - self.t0:.0f} s")
        table = Table.grid(padding=(0, 2))
        for name in outputs[:SHOWN_RUNNING]:
            frames = sum(v for k, v in running.items() if self.task_output[k] == name)
            table.add_row(Text(name), Text(f"{frames}/{self.frames_of.get(name, 0)} frames"))
        if len(outputs) > SHOWN_RUNNING:
            table.add_row(Text(f"... and {len(outputs) - SHOWN_RUNNING} more"), Text(""))
        return Group(head, table)
