"""Where lagsplit loses to robust PCA, the benchmark measures why: noise floors of a causal
and a whole-movie average, and the slow error on the pixels spots visited."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from lagsplit.adapters.scenes import Scene
from lagsplit.bench.quality import noise_floors, spot_error, spot_visited
from lagsplit.bench.report import _why_behind_lines


def _scene(noise: float = 0.0, frames: int = 40, size: int = 16) -> Scene:
    rng = np.random.default_rng(0)
    slow = np.broadcast_to(np.linspace(10, 20, size * size, dtype=np.float32).reshape(size, size),
                           (frames, size, size)).copy()
    fast = np.zeros_like(slow)
    fast[:, :4, :4] = 50.0  # a spot that stays in one corner
    movie = slow + fast + rng.normal(0, noise, slow.shape).astype(np.float32) if noise else slow + fast
    return Scene("t", movie, slow, fast, [np.zeros((0, 2))] * frames, "", {})


def test_without_noise_the_floors_are_zero_and_with_noise_the_causal_one_is_higher():
    assert max(noise_floors(_scene(), first=10, window=8)[1:]) < 1e-5  # float32 rounding alone
    area, causal, whole = noise_floors(_scene(noise=2.0), first=10, window=8)
    assert abs(area - 16 / 256) < 1e-9  # the spot's corner, 4 x 4 of 16 x 16 px
    assert causal > 1.5 * whole > 0  # 8 frames average less noise away than 40


def test_the_slow_error_on_spot_visited_pixels_is_its_share_and_sign():
    scene = _scene()
    assert spot_visited(scene, 10)[:, :4, :4].all() and not spot_visited(scene, 10)[:, 8:, 8:].any()
    est = scene.slow.copy()
    est[:, :4, :4] += 1.0  # the spot leaks into slow
    share, bias = spot_error(est, scene, 10)
    assert share == 1.0 and bias > 0
    est = scene.slow - 1.0  # too dark everywhere
    share, bias = spot_error(est, scene, 10)
    assert abs(share - 16 / 256) < 1e-9 and bias < 0


def _row(name, lag, rpca, floors, lag_spots, rpca_spots):
    return (SimpleNamespace(name=name, floors=floors),
            SimpleNamespace(slow=lag, spots=lag_spots), SimpleNamespace(slow=rpca, spots=rpca_spots))


def test_the_reasons_follow_the_numbers():
    text = "\n".join(_why_behind_lines([
        _row("leaky", 0.15, 0.11, (0.16, 0.08, 0.05), (0.76, 0.2), (0.26, 0.03)),
        _row("crowded", 0.32, 0.23, (0.9, 0.09, 0.06), (0.93, 0.29), (0.93, 0.2)),
        _row("noisy", 0.095, 0.076, (0.2, 0.105, 0.07), (0.2, -0.01), (0.2, 0.0)),
        _row("other", 0.2, 0.1, (0.2, 0.05, 0.03), (0.2, -0.1), (0.2, 0.0))]))
    lines = {line.split("**")[1]: line for line in text.splitlines() if line.startswith("- **")}
    assert "76% of its squared error lies on the 16% of pixels" in lines["leaky"]
    assert "spots visited 90% of the pixels" in lines["crowded"]
    assert "below the noise floor of any causal average" in lines["noisy"] and "leak" not in lines["noisy"]
    assert "lagsplit is already below that causal floor" in lines["noisy"]
    assert "neither the noise floor nor the spots explain the gap" in lines["other"]
