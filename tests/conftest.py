"""Shared fixtures: small fast engine configs and a guard against leaked threads."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
import zmq

from lagsplit.engine.config import ModelConfig, TrainConfig

torch.set_num_threads(2)
os.environ["COLUMNS"] = "250"  # rich consoles are built at import: keep CLI output on one line per fact


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """A test that leaves a thread running fails (sockets and writers must be closed)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        # A thread Python did not start (Qt's thread pool, which runs napari's workers) is
        # listed as a _DummyThread once it runs Python code, and Python never unlists it,
        # ended or not: the tests that start such workers check that they ended.
        # zarr runs its reads and writes on one event loop thread ("zarr_io") and that loop's
        # executor ("asyncio_N"), both process-wide and kept for the life of the process,
        # like Qt's pool: the OME-Zarr tests check what the store holds instead.
        extra = [t for t in threading.enumerate()
                 if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)
                 and not _zarr_thread(t)]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"test leaked threads: {[t.name for t in extra]}"


def _zarr_thread(t: threading.Thread) -> bool:
    import sys

    if "zarr.core.sync" not in sys.modules:
        return False
    sync = sys.modules["zarr.core.sync"]
    return t is sync.iothread[0] or (t.name.startswith("asyncio_") and sync.iothread[0] is not None)


@pytest.fixture
def small_model() -> ModelConfig:
    return ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", seed=3)


@pytest.fixture
def fixed_train() -> TrainConfig:
    return TrainConfig(mode="fixed", steps_per_frame=1, warmup_steps=5, batch=2, crop=16, history=16)


@pytest.fixture
def noise_stack() -> np.ndarray:
    """A small uint16 stack: static pattern plus a moving spot plus shot noise."""
    rng = np.random.default_rng(7)
    t, h, w = 30, 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    base = 50 + 20 * np.sin(xx / 5.0) + 10 * np.cos(yy / 4.0)
    movie = np.empty((t, h, w), np.uint16)
    for i in range(t):
        spot = 80 * np.exp(-((yy - 12) ** 2 + (xx - (i % w)) ** 2) / 3.0)
        movie[i] = rng.poisson(base + spot)
    return movie


@pytest.fixture
def ctx():
    """A ZeroMQ context whose sockets must all be closed by the end of the test."""
    c = zmq.Context()
    yield c
    left = [s for s in getattr(c, "_sockets", ()) if not s.closed]
    for s in left:
        s.close(linger=0)
    c.term()
    assert not left, f"test leaked {len(left)} socket(s)"
