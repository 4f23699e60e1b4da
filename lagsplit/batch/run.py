"""``lagsplit batch``: plan the outputs, run their tasks on a Dask cluster, show progress,
write ``batch.csv``. Each output's task (or its chunks and their merge) is submitted once;
Dask runs a task again on another worker when the worker running it dies, and the task
continues its partial output from there. Ctrl-C sets the batch's stop flag, waits for the
running tasks to close their files, and cancels the rest."""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .cluster import GPU, Cluster, ClusterError
from .plan import PARTIAL_FOLDER, BatchRequest, Job, check_request, plan_batch
from .progress import BatchProgress
from .split import merge_chunks
from .summary import Row, write_summary
from .task import PROGRESS_TOPIC, Outcome, run_task

log = logging.getLogger("lagsplit")

SUMMARY_NAME = "batch.csv"
STOP_WAIT_S = 60.0
"""After Ctrl-C: how long running tasks get to close their files before the batch leaves."""


@dataclass
class BatchResult:
    rows: list[Row]
    summary: Path
    seconds: float
    cluster: str
    interrupted: bool = False
    task_seconds: float = 0.0
    """The tasks' own time on their workers, summed (what the cluster adds is the rest)."""
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.count("failed") else 0


def merge_after(parts, partial, final, key, *outcomes: Outcome) -> Outcome:
    """The merge task of a ``--split`` output: runs once every chunk has ended; merges when
    all finished, else passes the first failure (or cancellation) on."""
    for o in outcomes:
        if o.status != "ok":
            return Outcome(key, o.status, error=o.error, seconds=sum(x.seconds for x in outcomes))
    merged = merge_chunks(parts, partial, final, key)
    return dataclasses.replace(merged, seconds=merged.seconds + sum(o.seconds for o in outcomes))


def _resources(job: Job) -> dict | None:
    return {GPU: 1} if job.tasks and job.tasks[0].config.model.device == "cuda" else None


def run_batch(req: BatchRequest, cluster_factory, console=None, progress: bool = True) -> BatchResult:
    """Run the batch; ``cluster_factory()`` gives the Cluster (called after the request
    and its inputs are checked, before anything is written). ClusterError, ValueError,
    InputError and ConfigError come out before anything starts."""
    check_request(req)
    jobs = plan_batch(req)
    rows = [Row(j.recording, j.final.name, j.status if j.status != "todo" else "pending", j.done_frames,
                0.0, j.warmup_frames, j.error) for j in jobs]
    for j in jobs:
        if j.status == "failed":
            log.error("%s: %s", j.recording, j.error)
    summary = req.out_dir / SUMMARY_NAME
    todo = [i for i, j in enumerate(jobs) if j.status == "todo"]
    t0 = time.perf_counter()
    if not todo:
        write_summary(summary, rows)
        return BatchResult(rows, summary, 0.0, "no cluster: nothing to run")
    cluster: Cluster = cluster_factory()
    try:
        if any(_resources(jobs[i]) for i in todo) and not cluster.gpu_workers():
            raise ClusterError(f"model.device = cuda, but no worker of {cluster.description} offers the {GPU} "
                               f"resource (start GPU workers with `dask worker ADDRESS --resources {GPU}=1`)")
        req.out_dir.mkdir(parents=True, exist_ok=True)
        write_summary(summary, rows)
        result = _run_on(cluster, jobs, todo, rows, summary, console, progress)
    finally:
        cluster.close()
        _remove_if_empty(req.out_dir / PARTIAL_FOLDER)
    result.seconds = time.perf_counter() - t0
    return result


def _run_on(cluster: Cluster, jobs: list[Job], todo: list[int], rows: list[Row], summary: Path, console,
            progress: bool) -> BatchResult:
    from distributed import Event, as_completed

    client = cluster.client
    tag = uuid.uuid4().hex[:8]
    stop_name = f"lagsplit-batch-stop-{tag}"
    stop = Event(stop_name, client=client)
    settled = ", ".join(f"{n} {what}" for what, n in (
        ("finished already", sum(j.status == "skipped" for j in jobs)),
        ("failed to open", sum(j.status == "failed" for j in jobs))) if n)
    display = BatchProgress([jobs[i] for i in todo], console, cluster.description, enabled=progress, settled=settled)
    client.subscribe_topic(PROGRESS_TOPIC, display.on_event)
    final_futures = {}
    held = []  # the chunks' futures: they run while their merge waits for them
    for i in todo:
        job = jobs[i]
        res = _resources(job)
        futs = [client.submit(run_task, t, stop_name, key=f"lagsplit-{tag}-{t.key}", pure=False, resources=res)
                for t in job.tasks]
        if job.chunks:
            parts = [(t.partial, c) for t, c in zip(job.tasks, job.chunks, strict=True)]
            fut = client.submit(merge_after, parts, job.partial, job.final, job.name, *futs,
                                key=f"lagsplit-{tag}-{job.name}#merge", pure=False)
            held.extend(futs)
        else:
            fut = futs[0]
        final_futures[fut] = i
    outcomes: list[Outcome] = []
    interrupted = False
    with display:
        try:
            for fut in as_completed(list(final_futures)):
                i = final_futures[fut]
                _record(rows[i], _outcome(fut, jobs[i]), outcomes)
                display.finished(jobs[i], rows[i])
                write_summary(summary, rows)
        except KeyboardInterrupt:
            interrupted = True
            display.say("[bold yellow]Ctrl-C:[/] stopping; running recordings close their files (their partial "
                        "outputs are continued by the next run of this batch)")
            stop.set()
            _drain(final_futures, jobs, rows, outcomes, summary, display)
    client.unsubscribe_topic(PROGRESS_TOPIC)
    return BatchResult(rows, summary, 0.0, cluster.description, interrupted,
                       sum(o.seconds for o in outcomes), outcomes)


def _drain(final_futures: dict, jobs: list[Job], rows: list[Row], outcomes: list[Outcome], summary: Path,
           display) -> None:
    """After Ctrl-C (the stop flag is set): running tasks close their files and tasks not yet
    started end at once, both as ``cancelled``; those still busy after STOP_WAIT_S are
    cancelled where they are (their partial outputs stay resumable)."""
    from distributed import wait

    try:
        wait(list(final_futures), timeout=STOP_WAIT_S)
    except TimeoutError:
        pass
    for fut, i in final_futures.items():
        if rows[i].status != "pending":
            continue
        if fut.done():
            _record(rows[i], _outcome(fut, jobs[i]), outcomes)
        else:
            fut.cancel()
            rows[i].status = "cancelled"
        display.finished(jobs[i], rows[i])
    write_summary(summary, rows)


def _remove_if_empty(folder: Path) -> None:
    """The partial outputs' folder, once every output has moved out of it (subfolders too)."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def _outcome(fut, job: Job) -> Outcome:
    """The task's outcome; a task Dask gave up on (its workers died, it raised) as failed."""
    if fut.status == "finished":
        return fut.result()
    if fut.status == "cancelled":
        return Outcome(job.name, "cancelled")
    exc = fut.exception()
    name = type(exc).__name__
    if name == "KilledWorker":
        msg = f"every worker that ran it died ({exc})"
    else:
        msg = f"{name}: {exc}"
    return Outcome(job.name, "failed", error=msg)


def _record(row: Row, o: Outcome, outcomes: list[Outcome]) -> None:
    outcomes.append(o)
    row.status, row.frames, row.seconds, row.warmup_frames, row.error = (o.status, o.frames, o.seconds,
                                                                          o.warmup_frames, o.error)
    if o.status == "failed":
        log.error("%s failed: %s", row.recording, o.error)
