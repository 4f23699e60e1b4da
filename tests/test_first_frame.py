"""A blank or saturated first frame (a camera that sent zeros before the shutter opened)
sets neither the networks' units nor the fading's reference: both come from the first
good frame, and a fading movie after it is followed."""
from __future__ import annotations

import numpy as np
import torch

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.bleach import tile_levels
from lagsplit.engine.config import ModelConfig, TrainConfig

from .support import run_engine


def _fading(frames: int = 40, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:size, 0:size]
    sample = 400 + 200 * np.sin(xx / 4.0) ** 2 + 100 * np.cos(yy / 5.0) ** 2
    fade = np.exp(-np.arange(frames) / 30.0)  # to 27 % over the movie
    return np.stack([rng.poisson(sample * f) for f in fade]).astype(np.uint16), fade


def test_a_blank_first_frame_is_not_the_fading_reference(small_model):
    movie, fade = _fading()
    model = small_model.model_copy(update={"bleach_tiles": 2})
    train = TrainConfig(mode="off")
    blank_first = np.concatenate([np.zeros_like(movie[:1]), movie])
    status, cascade = run_engine(ArrayStream(blank_first), model, train)
    assert status.blank == 1 and status.processed == len(blank_first)
    ref = tile_levels(torch.from_numpy(movie[0].astype(np.float32)), 2)  # the first good frame's
    torch.testing.assert_close(cascade.bleach.ref, ref)
    # the gain follows the fade (smoothed, so within a few per cent), instead of sitting at its clamp
    gain = float(cascade._gain.mean())
    assert abs(gain - fade[-1]) < 0.05, (gain, fade[-1])
    _, plain = run_engine(ArrayStream(movie), model, train)  # the same movie without the blank frame
    torch.testing.assert_close(cascade._gain, plain._gain)


def test_a_saturated_first_frame_is_not_the_fading_reference(small_model):
    movie, fade = _fading()
    model = ModelConfig(**{**small_model.model_dump(), "bleach_tiles": 2})
    saturated = np.full_like(movie[:1], np.iinfo(np.uint16).max)
    status, cascade = run_engine(ArrayStream(np.concatenate([saturated, movie])), model, TrainConfig(mode="off"))
    assert status.saturated == 1
    assert abs(float(cascade._gain.mean()) - fade[-1]) < 0.05
