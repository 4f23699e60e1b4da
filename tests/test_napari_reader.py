"""The napari reader as napari runs it, through npe2 and the installed plugin manifest, with
no display: layers raw / slow / fast (and the frame labels) of a real run file, their
colormaps, blending, scale and metadata, and the decline of files that are not lagsplit's."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from .run_files import INTERVAL_S, PIXEL_UM, SKIPPED, write_run

npe2 = pytest.importorskip("npe2")
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")  # inside napari


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("napari"))


@pytest.fixture(scope="module")
def plugins():
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "lagsplit" in pm._manifests, "the lagsplit manifest is not installed (pip install -e '.[test]')"
    return pm


def _read(path, pm):
    return npe2.read([str(path)], stack=False, plugin_name="lagsplit")


def test_npe2_opens_a_run_as_raw_slow_fast_and_frame_labels(run_file, plugins):
    layers = _read(run_file, plugins)
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["raw (RFP)", "slow", "fast", "frame"]
    assert [kind for _, _, kind in layers] == ["image", "image", "image", "points"]
    by = {kw["name"].split()[0]: (data, kw) for data, kw, _ in layers}
    assert {k: by[k][1]["colormap"] for k in ("raw", "slow", "fast")} == {"raw": "gray", "slow": "green",
                                                                        "fast": "magenta"}
    assert by["fast"][1]["blending"] == "additive" and by["slow"][1]["blending"] != "additive"
    with h5py.File(run_file, "r") as f:
        for name in ("raw", "slow", "fast"):
            data, kw = by[name]
            assert isinstance(data, h5py.Dataset), "the layer reads the file lazily"
            np.testing.assert_array_equal(np.asarray(data), f[name][:])
            assert kw["scale"] == pytest.approx((INTERVAL_S, PIXEL_UM, PIXEL_UM))
            assert kw["units"] == ("s", "um", "um") and kw["axis_labels"] == ("t", "y", "x")
            lo, hi = kw["contrast_limits"]
            values = f[name][:]
            assert values.min() <= hi and lo < hi <= values.max()
        meta = by["slow"][1]["metadata"]["lagsplit"]
        np.testing.assert_array_equal(meta["frame_index"], f["frames/index"][:])
        np.testing.assert_array_equal(meta["warmup"], f["frames/warmup"][:].astype(bool))
    assert by["fast"][1]["contrast_limits"][0] == 0.0  # fast's negative part is noise
    assert meta["gaps"] == [{"first_index": SKIPPED[0], "count": len(SKIPPED), "reason": "missing"}]
    assert meta["pixel_size_um"] == pytest.approx((PIXEL_UM, PIXEL_UM)) and meta["channel_name"] == "RFP"


def test_each_time_point_is_labelled_with_its_frame_warm_up_and_gap(run_file, plugins):
    coords, kw, kind = _read(run_file, plugins)[-1]
    labels = kw["features"]["label"]
    frames = [i for i in range(30) if i not in SKIPPED]
    assert len(labels) == len(frames) and list(coords[:, 0]) == list(range(len(frames)))
    assert labels[0].startswith("frame 0 · t 0.00 s · warm-up")
    after_gap = frames.index(SKIPPED[-1] + 1)
    assert labels[after_gap] == f"frame {SKIPPED[-1] + 1} · t {(SKIPPED[-1] + 1) * INTERVAL_S:.2f} s · after 3 missing"
    assert labels[5] == "frame 5 · t 0.25 s · warm-up"  # the recorded time (0.253 s), not the read time
    assert "warm-up" not in labels[-1] and labels[-1].startswith(f"frame {frames[-1]} ·")


def test_the_layers_are_valid_napari_layers(run_file, plugins):
    from napari.layers import Layer

    built = [Layer.create(data, kw, kind) for data, kw, kind in _read(run_file, plugins)]
    assert [type(b).__name__ for b in built] == ["Image", "Image", "Image", "Points"]
    assert built[2].colormap.name == "magenta" and built[2].blending == "additive"
    np.testing.assert_allclose(built[1].scale, (INTERVAL_S, PIXEL_UM, PIXEL_UM))
    assert built[0].data.shape[0] == built[3].data.shape[0] == 27


def test_a_foreign_h5_is_declined_so_other_readers_get_it(tmp_path, run_file, plugins):
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("data", data=np.zeros((3, 4, 4)))
        f.create_dataset("slow", data=np.zeros((3, 4, 4)))
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not HDF5")
    get_reader = plugins.get_command("lagsplit.get_reader").exec
    for path in (foreign, not_hdf5, tmp_path / "missing.h5", tmp_path):
        assert get_reader(args=(str(path),)) is None, path
    assert get_reader(args=([str(run_file), str(run_file)],)) is None
    assert get_reader(args=(str(run_file),)) is not None
    readers = [r.plugin_name for r in plugins.iter_compatible_readers([str(foreign)])]
    assert "lagsplit" in readers  # offered by file name, then declined by content
    with pytest.raises(ValueError):
        npe2.read([str(foreign)], stack=False, plugin_name="lagsplit")


def test_a_run_whose_source_knew_no_scale_has_unit_scale(tmp_path, plugins):
    from lagsplit.adapters.synthetic import ArrayStream
    from lagsplit.engine.config import ModelConfig, TrainConfig

    from .run_files import movie
    from .support import run_engine

    out = tmp_path / "plain.h5"
    run_engine(ArrayStream(movie(12)[:, 0]), ModelConfig(lags=(2, 1), base_channels=4, levels=1, device="cpu"),
               TrainConfig(mode="fixed", warmup_steps=2, batch=2, crop=16, history=8), path=out)
    data, kw, _ = _read(out, plugins)[0]
    assert kw["name"] == "raw" and kw["scale"] == (1.0, 1.0, 1.0) and kw["units"] == ("pixel",) * 3
    with h5py.File(out, "r") as f:
        assert not {"pixel_size_um", "frame_interval_s", "channel_name"} & set(f.attrs)
