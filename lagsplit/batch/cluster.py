"""The Dask cluster a batch runs on: a running one (``--scheduler ADDRESS``: ``dask
scheduler`` / ``dask worker``, dask-jobqueue, dask-kubernetes, Coiled...) or a local one
started for the batch, a worker process per core with one thread each."""
from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lagsplit.extras import require

BATCH_NEEDS = {"distributed": "distributed"}
"""``lagsplit batch``: Dask's distributed scheduler (the ``batch`` extra)."""
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.worker.memory.monitor-interval": "1s"}
"""The local cluster's workers neither sample their threads' stacks (Dask's statistical
profiler, 100 times a second, for a dashboard a batch does not start) nor measure their
memory 10 times a second: with a task on every core, both took time from the tasks."""
GPU = "GPU"
"""The Dask worker resource a GPU task asks for: start such workers with ``--resources GPU=1``."""


class ClusterError(RuntimeError):
    """The cluster cannot be reached or started, phrased for the user."""


@dataclass
class Cluster:
    client: object
    local: object | None
    """The LocalCluster started for the batch (closed with it), None for a running one."""
    description: str

    def workers(self) -> dict[str, dict]:
        return self.client.scheduler_info(n_workers=-1)["workers"]

    def gpu_workers(self) -> int:
        return sum(1 for w in self.workers().values() if w.get("resources", {}).get(GPU, 0) >= 1)

    def close(self) -> None:
        for part in (self.client, self.local):
            if part is None:
                continue
            try:
                part.close()
            except Exception as exc:  # noqa: BLE001 - the other is closed all the same
                logging.getLogger("lagsplit").warning("closing the Dask %s: %s", type(part).__name__, exc)


def open_cluster(workers: int | None = None, scheduler: str | None = None, timeout_s: float = 10.0) -> Cluster:
    """Connect to ``scheduler``, or start a local cluster of ``workers`` processes (default:
    one per core; with dask-cuda installed and CUDA available, one per GPU, each offering
    the ``GPU`` resource). ClusterError naming the address when it cannot be reached."""
    require("lagsplit batch", "batch", BATCH_NEEDS)
    import dask
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # its import sets INFO: the cluster's chatter

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s: {exc} "
                               f"(is `dask scheduler` running there, and the address its `Scheduler at:` line "
                               f"prints?)") from None
        n = len(client.scheduler_info(n_workers=-1)["workers"])
        return _ready(Cluster(client, None, f"the Dask scheduler at {scheduler} ({n} workers now)"))
    with _workers_ignore_ctrl_c(), dask.config.set(LOCAL_WORKER_CONFIG):
        local = _local_cuda_cluster(workers)
        if local is None:
            n = workers or os.cpu_count() or 1
            local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=logging.ERROR)
            what = f"a local Dask cluster of {n} worker processes, one thread each"
        else:
            what = f"a local dask-cuda cluster of {len(local.workers)} GPU workers"
    return _ready(Cluster(Client(local), local, what))


def _import_engine() -> None:
    import lagsplit.app  # noqa: F401 - torch and the engine, imported once per worker process


def _ready(cluster: Cluster) -> Cluster:
    """The workers there now import torch and the engine before the first task (part of
    starting the cluster, not of the first task each worker runs)."""
    try:
        cluster.client.run(_import_engine)
    except BaseException:
        cluster.close()
        raise
    return cluster


@contextmanager
def _workers_ignore_ctrl_c():
    """Ctrl-C in a terminal reaches every process of its group, the local workers too;
    they are started ignoring it (an ignored signal stays ignored in a child), so that the
    batch itself asks them to close their files instead of their dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_cuda_cluster(workers: int | None):
    """A LocalCUDACluster (one worker per GPU, each offering ``GPU``) when dask-cuda is
    installed and torch sees a GPU; else None."""
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    from dask_cuda import LocalCUDACluster

    kw = {"n_workers": workers} if workers else {}
    return LocalCUDACluster(threads_per_worker=1, dashboard_address=None, resources={GPU: 1},
                            silence_logs=logging.ERROR, **kw)


class SchedulerProcesses:
    """A ``dask scheduler`` process and ``workers`` ``dask worker`` processes (one thread
    each) on this machine, as a user starts them by hand on two machines: for the batch
    benchmark and the tests. ``address`` is the scheduler's; ``worker_pids`` the worker
    processes' (a test kills one). Use as a context manager; every process is stopped."""

    def __init__(self, workers: int = 2, folder: str | os.PathLike | None = None, timeout_s: float = 60.0) -> None:
        import tempfile

        self.workers = workers
        self.timeout_s = timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="lagsplit-dask-") if folder is None else None
        self.folder = Path(folder if folder is not None else self._tmp.name)
        self.procs: list = []
        self.address = ""

    def __enter__(self) -> SchedulerProcesses:
        import json
        import subprocess
        import sys
        import time

        file = self.folder / "scheduler.json"
        base = [sys.executable, "-m"]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        try:
            self.procs.append(subprocess.Popen([*base, "distributed.cli.dask_scheduler", "--scheduler-file", str(file),
                                                "--port", "0", "--no-dashboard"], **quiet))
            end = time.monotonic() + self.timeout_s
            while not file.exists() and time.monotonic() < end:
                time.sleep(0.1)
            for _ in range(self.workers):
                self.procs.append(subprocess.Popen([*base, "distributed.cli.dask_worker", "--scheduler-file",
                                                    str(file), "--nthreads", "1", "--no-dashboard", "--no-nanny"],
                                                   **quiet))
            from distributed import Client

            self.address = json.loads(file.read_text())["address"]
            with Client(self.address, timeout=f"{self.timeout_s}s") as client:
                client.wait_for_workers(self.workers, timeout=self.timeout_s)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs[1:]]

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except Exception:  # noqa: BLE001 - one that does not stop in time is killed
                p.kill()
        self.procs = []
        if self._tmp is not None:
            self._tmp.cleanup()
