"""Real lagsplit run files for the napari, export and metadata tests: an OME-TIFF with a
pixel size, an interval, channel names and plane times, replayed through the real engine
and HDF5 sink."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from lagsplit.adapters.replay import ReplayAdapter
from lagsplit.engine.config import ModelConfig, TrainConfig

from .support import run_engine

PIXEL_UM = 0.13
INTERVAL_S = 0.05
CHANNELS = ["GFP", "RFP"]
FRAMES = 30
SKIPPED = (10, 11, 12)
"""Frames the gappy replay leaves out: one gap of three, reason "missing"."""


def movie(frames: int = FRAMES, h: int = 24, w: int = 32, seed: int = 7) -> np.ndarray:
    """(T, 2, H, W) uint16: a static pattern, a spot moving one pixel per frame, shot noise;
    channel 1 is channel 0 halved."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 50 + 20 * np.sin(xx / 5.0) + 10 * np.cos(yy / 4.0)
    out = np.empty((frames, 2, h, w), np.uint16)
    for i in range(frames):
        out[i, 0] = rng.poisson(base + 80 * np.exp(-((yy - 12) ** 2 + (xx - (i % w)) ** 2) / 3.0))
        out[i, 1] = out[i, 0] // 2
    return out


def plane_times(frames: int = FRAMES) -> np.ndarray:
    """DeltaT (s) of each (t, c) plane: the interval, channel 1 10 ms after channel 0, frame 5 late by 3 ms."""
    t = np.arange(frames) * INTERVAL_S + np.where(np.arange(frames) == 5, 0.003, 0.0)
    return np.stack([t, t + 0.01], axis=1)


def write_ome_stack(path: Path, frames: int = FRAMES) -> Path:
    tifffile.imwrite(path, movie(frames), ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": PIXEL_UM, "PhysicalSizeY": PIXEL_UM, "TimeIncrement": INTERVAL_S,
        "Channel": {"Name": CHANNELS}, "Plane": {"DeltaT": plane_times(frames).reshape(-1).tolist()}})
    return path


class GappyReplay(ReplayAdapter):
    """A replay that loses frames SKIPPED on the way (the engine records them as a gap)."""

    def __iter__(self):
        return (fr for fr in super().__iter__() if fr.index not in SKIPPED)


def write_run(folder: Path, name: str = "run.h5", channel: int = 1, gaps: bool = True) -> Path:
    """Replay channel ``channel`` of an OME-TIFF through the real engine into ``folder/name``."""
    stack = write_ome_stack(folder / f"{name}.stack.ome.tif")
    adapter = (GappyReplay if gaps else ReplayAdapter)(str(stack), channel=channel)
    model = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, device="cpu", seed=3)
    train = TrainConfig(mode="fixed", steps_per_frame=1, warmup_steps=5, batch=2, crop=16, history=16)
    out = folder / name
    run_engine(adapter, model, train, path=out)
    return out
