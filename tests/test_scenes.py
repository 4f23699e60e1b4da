"""The benchmark scenes: each is reproducible, has consistent ground truth, and plays
through the synthetic adapter by name."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from lagsplit.adapters import scenes
from lagsplit.adapters.scenes import REFERENCE_SIZE, SCENES, make_scene, scene_knobs
from lagsplit.adapters.synthetic import SyntheticAdapter

SMALL = dict(frames=24, size=32)


@pytest.mark.parametrize("name", list(SCENES))
def test_scene_is_reproducible_and_its_truth_adds_up(name):
    a = make_scene(name, seed=3, **SMALL)
    b = make_scene(name, seed=3, **SMALL)
    assert np.array_equal(a.movie, b.movie)
    assert a.movie.shape == a.slow.shape == a.fast.shape == (24, 32, 32)
    assert len(a.spots) == 24 and all(p.shape[1:] == (2,) for p in a.spots)
    # the noisy movie averages to the noise-free truth (shot noise has mean zero)
    truth = a.slow.astype(np.float64) + a.fast
    assert abs(a.movie.mean() - truth.mean()) < 0.05 * truth.mean() - a.meta.get("offset", 0) * 0.04
    assert a.fast.min() >= 0 and a.slow.min() >= 0
    for pos in a.spots:
        assert ((pos >= 0) & (pos < 32)).all()


def test_scenes_differ_from_each_other_for_the_same_seed():
    a, b = make_scene("brownian", seed=0, **SMALL), make_scene("dense", seed=0, **SMALL)
    assert not np.allclose(a.slow[0], b.slow[0])


def test_bleaching_halves_the_background_and_keeps_the_spots():
    s = make_scene("bleaching", seed=1, frames=50, size=32)
    assert s.slow[-1].mean() / s.slow[0].mean() == pytest.approx(0.5, rel=1e-3)
    assert s.fast[0].max() == pytest.approx(s.fast[-1].max(), rel=0.35)


def _fold(scene, t: int = 100) -> np.ndarray:
    """How many times dimmer each pixel of the sample is at frame ``t`` than at frame 0."""
    return scene.slow[0].astype(np.float64) / scene.slow[t]


def test_fade_dims_the_sample_fourfold_by_frame_100_exponentially_and_keeps_the_spots():
    s = make_scene("fade", seed=1, frames=160, size=32)
    assert np.allclose(_fold(s), 4.0, rtol=1e-4)  # everywhere alike
    mean = s.slow.mean(axis=(1, 2)).astype(np.float64)
    assert mean[0] / mean[100] == pytest.approx(4.0, rel=1e-4)
    excess = mean / mean[0] - 0.1  # exponential decay towards a tenth: a constant ratio per frame
    ratios = excess[1:] / excess[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-4) and ratios[0] < 0.99
    assert mean[-1] < mean[100] and mean[-1] / mean[0] > 0.1
    spots_then, spots_now = s.fast[:20].mean(), s.fast[100:120].mean()
    assert 0.8 < spots_now / spots_then < 1.25  # the spots (fresh molecules) keep their brightness
    assert s.movie.mean(axis=(1, 2))[100] < 0.5 * s.movie.mean(axis=(1, 2))[0]


def test_fademap_fades_at_rates_that_change_smoothly_across_the_field():
    s = make_scene("fademap", seed=1, frames=110, size=48)
    fold = _fold(s)
    assert 1.95 < fold.min() < 2.3 and 5.7 < fold.max() < 6.05
    assert s.slow.mean(axis=(1, 2))[0] / s.slow.mean(axis=(1, 2))[100] >= 3.0
    steps = np.abs(np.diff(fold, axis=0)).max(), np.abs(np.diff(fold, axis=1)).max()
    assert max(steps) < 4.0 * 2 / 48  # a gradient: neighbours differ by at most the slope
    other = make_scene("fademap", seed=2, frames=110, size=48)
    assert not np.allclose(_fold(other), fold)  # another seed, another direction


def test_fademove_spots_move_slowly_on_a_fading_sample():
    s = make_scene("fademove", seed=1, frames=120, size=64)
    assert np.allclose(_fold(s), 5.0, rtol=1e-4)
    steps = np.stack([np.linalg.norm(b - a, axis=1) for a, b in zip(s.spots[:-1], s.spots[1:])])  # (T-1, spots)
    assert steps.max() <= 1.0 + 1e-9  # never faster than 1 px/frame (slower only where reflected at an edge)
    typical = np.median(steps, axis=0)
    assert typical.min() >= 0.2 - 1e-9 and typical.max() <= 1.0
    assert typical.max() - typical.min() > 0.4  # speeds spread over the range


def test_fading_refuses_a_fold_the_floor_cannot_reach():
    with pytest.raises(ValueError, match="fade must lie between 1 and 1/floor"):
        scenes.fading(10, 12.0)


def test_dense_covers_a_fifth_of_the_field():
    s = make_scene("dense", seed=1, frames=5, size=64)
    yy, xx = np.mgrid[0:64, 0:64]
    pos = s.spots[0]
    d2 = (yy[..., None] - pos[:, 0]) ** 2 + (xx[..., None] - pos[:, 1]) ** 2
    covered = (d2 <= (2 * 1.2) ** 2).any(-1)  # within 2 sigma of a spot centre
    assert len(pos) * np.pi * (2 * 1.2) ** 2 == pytest.approx(0.2 * 64 * 64, rel=0.05)
    assert 0.14 < covered.mean() < 0.22  # a fifth, less where spots overlap


def test_blinking_spots_stay_in_place_and_switch():
    s = make_scene("blinking", seed=2, frames=60, size=48)
    seen = {tuple(np.round(p, 3)) for pos in s.spots for p in pos}
    assert len(seen) <= 40  # only the fixed sites ever light up
    counts = [len(p) for p in s.spots]
    assert min(counts) < max(counts)


@pytest.mark.parametrize("name", ["step", "jump"])
def test_sudden_change_happens_once_at_the_stated_frame(name):
    s = make_scene(name, seed=1, frames=30, size=32)
    k = s.meta["change_at"]
    assert k == 20
    d = np.abs(np.diff(s.slow, axis=0)).max(axis=(1, 2))
    assert d[k - 1] > 1.0 and np.all(np.delete(d, k - 1) == 0)


def test_drift_moves_the_background_slowly():
    s = make_scene("drift", seed=1, frames=40, size=48)
    step = np.abs(np.diff(s.slow, axis=0)).mean()
    total = np.abs(s.slow[-1] - s.slow[0]).mean()
    assert 0 < step < 0.2 * total


def test_lowlight_has_a_few_photons_over_the_camera_offset():
    s = make_scene("lowlight", seed=1, frames=10, size=32)
    assert s.meta["offset"] == 100.0
    assert 1.0 < s.slow.mean() - 100.0 < 8.0
    assert s.movie.dtype == np.uint16


def test_the_registry_lists_every_scene_and_builds_each_by_name():
    """One registry: every factory of adapters.scenes, in the order of its docstring's table,
    each built by make_scene and played by the synthetic adapter under its name."""
    factories = {n for n, f in vars(scenes).items()
                 if n.endswith("_scene") and not n.startswith("_") and inspect.isfunction(f)}
    assert {f.__name__ for f in SCENES.values()} == factories - {"make_scene"}
    table = [line.split("|")[1].strip() for line in scenes.__doc__.splitlines() if line.startswith("| ")][2:]
    assert list(SCENES) == table
    for name in SCENES:
        s = make_scene(name, frames=3, size=16, seed=0)
        assert s.name == name and s.movie.shape == (3, 16, 16)
        frames = list(SyntheticAdapter(name, frames=3, size=16, seed=0))
        assert [f.array.tolist() for f in frames] == s.movie.tolist()
    with pytest.raises(ValueError, match="unknown scene 'nope'; known: filaments, brownian"):
        make_scene("nope")


def _ridge_fraction(scene) -> float:
    """Fraction of the field on fine bright structure: slow over its 9x9 px local median by 4 photons."""
    from scipy import ndimage

    slow = scene.slow[0].astype(np.float64)
    return float((slow - ndimage.median_filter(slow, 9) > 4).mean())


def test_scene_knobs_keep_the_128_px_crowding_at_other_sizes():
    for name in SCENES:
        assert scene_knobs(name, REFERENCE_SIZE) == {}  # the defaults: 128 px scenes stay as they are
        knobs = scene_knobs(name, 256)
        s = make_scene(name, frames=2, size=64, seed=0, **scene_knobs(name, 64))  # every knob is a real one
        assert s.movie.shape == (2, 64, 64)
        if name != "dense":  # dense counts its spots from the area already
            assert knobs["n_spots"] == 4 * inspect.signature(SCENES[name]).parameters["n_spots"].default
        assert knobs["n_filaments"] == 2 * inspect.signature(SCENES[name]).parameters["n_filaments"].default
    assert scene_knobs("brownian", 40) == {"n_spots": 3, "n_filaments": 1}  # never below one
    big = make_scene("brownian", frames=3, size=256, seed=1, **scene_knobs("brownian", 256))
    assert [len(p) for p in big.spots] == [120] * 3
    # Filaments span the field: as many per side keeps the share of the field they cover.
    seeds = (1, 2, 3)
    ref = np.mean([_ridge_fraction(make_scene("filaments", frames=1, size=128, seed=k)) for k in seeds])
    scaled = np.mean([_ridge_fraction(make_scene("filaments", frames=1, size=256, seed=k,
                                                 **scene_knobs("filaments", 256))) for k in seeds])
    sparse = np.mean([_ridge_fraction(make_scene("filaments", frames=1, size=256, seed=k)) for k in seeds])
    assert scaled == pytest.approx(ref, rel=0.2) and sparse < 0.7 * ref
    with pytest.raises(ValueError, match="unknown scene 'nope'"):
        scene_knobs("nope", 256)
