"""OME-Zarr output (``--out NAME.ome.zarr``): real replays write real stores, read back with
zarr and validated with ome-zarr-models; a real killed process; a real resume compared row by
row with the HDF5 file of the same runs; what reads a run (inspect, export, the napari reader,
the follower, napari-ome-zarr) opens a store as it opens an .h5 file."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from lagsplit.cli import app
from lagsplit.engine.checkpoint import checkpoint_path

from .run_files import INTERVAL_S, PIXEL_UM, GappyReplay, write_ome_stack
from .support import FAST_CLI

zarr = pytest.importorskip("zarr")
ome_image = pytest.importorskip("ome_zarr_models.v05.image")

PER_ROW = ("raw", "slow", "fast", "frames/index", "frames/model_version", "frames/warmup", "frames/flags",
           "frames/shed", "frames/gate", "train/step", "train/loss", "gaps/first_index", "gaps/count", "gaps/reason",
           "counters")
"""Arrays that two runs of the same input in train.mode = fixed hold alike (not the latencies or play times)."""


def replay(src: Path, out: Path, *args: str):
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), *FAST_CLI, *args])
    return res


def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    return subprocess.Popen([sys.executable, "-m", "lagsplit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def read(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of a run, by its HDF5 name, from an .h5 file or (with zarr) a store."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return f[name][()]
    root = zarr.open_group(path, mode="r")
    key = f"{name}/0" if name in ("raw", "slow", "fast") or name.startswith("components/") else name
    return root[key][...]


def validate(path: Path, name: str):
    """The image ``name`` of a store, validated by ome-zarr-models (raises if it is not NGFF 0.5)."""
    return ome_image.Image.from_zarr(zarr.open_group(path / name, mode="r"))


@pytest.fixture
def stack(tmp_path):
    return write_ome_stack(tmp_path / "movie.ome.tif")


@pytest.fixture
def movie(stack):
    import tifffile

    return tifffile.imread(stack)[:, 1]  # the channel the replays split


def test_a_replay_writes_an_ome_zarr_store_that_validates_and_holds_the_run(tmp_path, stack, movie):
    out = tmp_path / "run.ome.zarr"
    res = replay(stack, out, "--channel", "1", "--set", "output.components=true",
                 "--set", "output.compression=blosc-lz4")
    assert res.exit_code == 0, res.output
    root = zarr.open_group(out, mode="r")
    assert root.metadata.zarr_format == 3
    images = ["raw", "slow", "fast", "components/lag_4", "components/lag_2", "components/lag_1", "components/residual"]
    for name in images:
        image = validate(out, name)
        ms = image.ome_attributes.multiscales[0]
        assert image.ome_attributes.version == "0.5"
        assert [(a.name, a.type, a.unit) for a in ms.axes] == [("t", "time", "second"), ("y", "space", "micrometer"),
                                                               ("x", "space", "micrometer")]
        assert ms.datasets[0].coordinateTransformations[0].scale == pytest.approx([INTERVAL_S, PIXEL_UM, PIXEL_UM])
        arr = root[f"{name}/0"]
        assert arr.shape == movie.shape and arr.metadata.dimension_names == ("t", "y", "x")
        assert any(type(c).__name__ == "BloscCodec" for c in arr.metadata.codecs), arr.metadata.codecs
    raw, slow, fast = (read(out, n) for n in ("raw", "slow", "fast"))
    np.testing.assert_array_equal(raw, movie)
    assert raw.dtype == movie.dtype and slow.dtype == np.float32
    np.testing.assert_allclose(slow + fast, raw.astype(np.float32), atol=1e-3)
    parts = sum(read(out, f"components/lag_{lag}") for lag in (4, 2, 1)) + read(out, "components/residual")
    np.testing.assert_allclose(parts, raw.astype(np.float32), atol=1e-2)
    np.testing.assert_array_equal(read(out, "frames/index"), np.arange(len(movie)))
    assert int(read(out, "flushed_rows")) == len(movie)
    counters = dict(zip(root["counters"].attrs["names"], read(out, "counters").tolist()))
    assert counters["processed"] == counters["received"] == len(movie)
    steps = read(out, "train/step")
    assert len(steps) > 10 and np.all(np.diff(steps) == 1) and read(out, "train/loss").shape == (len(steps), 3)
    assert steps[-1] >= read(out, "frames/model_version").max() > 0
    attrs = root.attrs["lagsplit"]
    assert attrs["lags"] == [4, 2, 1] and attrs["shape"] == [24, 32] and attrs["open_for_write"] is False
    assert attrs["pixel_size_um"] == pytest.approx([PIXEL_UM, PIXEL_UM]) and attrs["frame_interval_s"] == INTERVAL_S
    assert attrs["channel_name"] == "RFP" and attrs["config"]["output"]["path"] == str(out)
    assert list(root["gaps"].attrs["reasons"]) == ["dropped", "rejected", "missing", "not processed"]


def test_the_store_holds_what_the_hdf5_file_of_the_same_run_holds(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    for out in (tmp_path / "a.h5", tmp_path / "a.ome.zarr"):
        res = replay(src, out, "--set", "output.dtype=float16")
        assert res.exit_code == 0, res.output
    for name in PER_ROW:
        h5, store = read(tmp_path / "a.h5", name), read(tmp_path / "a.ome.zarr", name)
        assert h5.dtype == store.dtype, name
        np.testing.assert_array_equal(store, h5, err_msg=name)


@pytest.mark.parametrize(("compression", "codec"), [("none", None), ("gzip", "GzipCodec"), ("blosc-lz4", "BloscCodec")])
def test_compression_is_the_output_setting(tmp_path, noise_stack, compression, codec):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack[:6])
    out = tmp_path / "c.ome.zarr"
    res = replay(src, out, "--set", f"output.compression={compression!r}".replace("'", '"'))
    assert res.exit_code == 0, res.output
    codecs = [type(c).__name__ for c in zarr.open_group(out, mode="r")["slow/0"].metadata.codecs]
    assert codecs == ["BytesCodec"] + ([codec] if codec else [])
    np.testing.assert_array_equal(read(out, "raw"), noise_stack[:6])


def test_an_hdf5_only_compression_is_refused_before_the_run(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    res = replay(src, tmp_path / "c.ome.zarr", "--set", "output.compression=lzf")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "output.compression = 'lzf' is an HDF5 filter" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


def _rows_and_checkpoint(out: Path) -> int:
    if not checkpoint_path(out).exists():
        return 0
    try:
        return int(zarr.open_group(out, mode="r")["flushed_rows"][...])
    except (OSError, KeyError, ValueError):
        return 0


def test_a_reader_sees_whole_frames_while_the_run_writes_and_a_killed_run_resumes(tmp_path, noise_stack):
    from lagsplit.engine.zarr_sink import ZarrRun

    movie = np.concatenate([noise_stack] * 4)  # 120 frames
    src, out = tmp_path / "s.npy", tmp_path / "run.ome.zarr"
    np.save(src, movie)
    proc = start("replay", str(src), "--out", str(out), "--fps", "40", *FAST_CLI,
                 "--set", "output.flush_every=5", "--set", "output.checkpoint_every=10")
    looks = []
    try:
        deadline = time.monotonic() + 60
        while _rows_and_checkpoint(out) < 40 and time.monotonic() < deadline and proc.poll() is None:
            try:
                run = ZarrRun(out)
            except OSError:  # not created yet
                time.sleep(0.05)
                continue
            if "lags" in run.attrs:  # a reader of a live store: every row it trusts is whole
                rows = run.whole_rows()
                looks.append(rows)
                np.testing.assert_array_equal(run["frames/index"][:rows], np.arange(rows))
                np.testing.assert_array_equal(run["raw"][:rows], movie[:rows])
                assert rows <= len(run["raw"]) and run.open_for_write
            time.sleep(0.05)
        assert _rows_and_checkpoint(out) >= 40, proc.stderr.read() if proc.poll() is not None else "too slow"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert len(set(looks)) > 2 and looks == sorted(looks), looks  # it grew while we looked

    run = ZarrRun(out)  # what the kill left: the flushed frames, whole, and valid metadata
    kept = run.whole_rows()
    assert 40 <= kept < len(movie) and run.open_for_write
    np.testing.assert_array_equal(run["raw"][:kept], movie[:kept])
    for name in ("raw", "slow", "fast"):
        validate(out, name)
    shown = CliRunner().invoke(app, ["inspect", str(out), "--no-config"])
    assert shown.exit_code == 0 and f"({kept} whole rows)" in " ".join(shown.output.split()), shown.output

    again = replay(src, out, "--resume")
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(read(out, "frames/index"), np.arange(len(movie)))  # no duplicate, no hole
    np.testing.assert_array_equal(read(out, "raw"), movie)
    assert len(read(out, "slow")) == len(read(out, "frames/model_version")) == len(movie)
    assert read(out, "resumes/row").tolist() == [kept] and read(out, "resumes/after_index").tolist() == [kept - 1]
    root = zarr.open_group(out, mode="r")
    counters = dict(zip(root["counters"].attrs["names"], read(out, "counters").tolist()))
    assert counters["processed"] == len(movie) and counters["resumes"] == 1
    assert root.attrs["lagsplit"]["open_for_write"] is False


def test_a_resumed_store_continues_exactly_as_a_resumed_hdf5_file(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    for out in (tmp_path / "r.h5", tmp_path / "r.ome.zarr"):
        assert replay(src, out, "--set", "source.stop=18").exit_code == 0
        again = replay(src, out, "--resume")
        assert again.exit_code == 0, again.output
    for name in (*PER_ROW, "resumes/row", "resumes/after_index", "resumes/model_version", "resumes/counters"):
        h5, store = read(tmp_path / "r.h5", name), read(tmp_path / "r.ome.zarr", name)
        np.testing.assert_array_equal(store, h5, err_msg=name)
    assert read(tmp_path / "r.ome.zarr", "resumes/model_version")[0] > 0  # continued from the checkpoint
    np.testing.assert_array_equal(read(tmp_path / "r.ome.zarr", "raw"), noise_stack)


def test_an_existing_store_is_refused_without_overwrite_and_replaced_with_it(tmp_path, noise_stack):
    src, out = tmp_path / "s.npy", tmp_path / "o.ome.zarr"
    np.save(src, noise_stack)
    assert replay(src, out, "--set", "source.stop=6").exit_code == 0
    before = digest(out)
    res = replay(src, out)
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and f"{out} exists: give --overwrite to replace it" in text, text
    assert digest(out) == before
    res = replay(src, out, "--overwrite", "--set", "source.stop=9")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read(out, "frames/index"), np.arange(9))


def _foreign_store(path: Path) -> None:
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.create_array("image", shape=(4, 8, 8), dtype="uint8", fill_value=0)
    root.attrs["written_by"] = "another program"


def test_bad_stores_are_refused_with_a_clear_error_and_left_alone(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    a_file = tmp_path / "file.ome.zarr"
    a_file.write_bytes(b"not a store")
    folder = tmp_path / "notes.ome.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    foreign = tmp_path / "other.ome.zarr"
    _foreign_store(foreign)
    before = {p: digest(p) for p in (a_file, folder, foreign)}
    cases = [
        (a_file, ["--overwrite"], f"output {a_file} is a file, not an OME-Zarr store (a folder)"),
        (folder, ["--overwrite"], f"output {folder} is a folder that is not a Zarr store"),
        (foreign, [], f"{foreign} exists: give --overwrite"),
        (foreign, ["--resume"], f"cannot resume {foreign}: not a lagsplit output store"),
    ]
    for out, args, says in cases:
        res = replay(src, out, *args)
        text = " ".join(res.output.split())
        assert res.exit_code == 2 and says in text, (args, text)
    assert {p: digest(p) for p in before} == before
    shown = CliRunner().invoke(app, ["inspect", str(foreign)])
    text = " ".join(shown.output.split())
    assert shown.exit_code == 2 and "is not a lagsplit output store (written by another program?)" in text, text


def test_a_resume_whose_store_has_other_axes_or_frames_of_another_shape_is_refused(tmp_path, noise_stack):
    src, out = tmp_path / "s.npy", tmp_path / "o.ome.zarr"
    np.save(src, noise_stack)
    assert replay(src, out, "--set", "source.stop=12").exit_code == 0
    np.save(src, noise_stack[:, :, :30])
    before = digest(out)
    res = replay(src, out, "--resume")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "it holds frames of 24 x 32 px, this run's are 24 x 30 px (shape)" in text, text
    assert "the store is left as it was" in text or "the file is left as it was" in text
    assert digest(out) == before

    np.save(src, noise_stack)
    slow = zarr.open_group(out / "slow", mode="r+")  # as a program writing (t, c, y, x) would have it
    ome = dict(slow.attrs["ome"])
    ome["multiscales"] = [{**ome["multiscales"][0], "axes": [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
                                                             {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]}]
    slow.attrs["ome"] = ome
    before = digest(out)
    res = replay(src, out, "--resume")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "its images have axes (t, c, y, x)" in text and "lagsplit writes (t, y, x)" in text, text
    assert digest(out) == before


def test_without_the_zarr_extra_an_ome_zarr_output_names_it(tmp_path, noise_stack, monkeypatch):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    monkeypatch.setitem(sys.modules, "ome_zarr_models", None)
    res = replay(src, tmp_path / "o.ome.zarr")
    text = " ".join(res.output.split())
    assert res.exit_code == 2, text
    assert "needs ome-zarr-models, not installed: pip install 'lagsplit[zarr]'" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


@pytest.fixture
def store_and_file(tmp_path, stack):
    """The same replay (a gap of three frames included) as a store and as an HDF5 file."""
    from lagsplit.app import build_run, execute
    from lagsplit.config import Config

    paths = []
    for name in ("run.ome.zarr", "run.h5"):
        cfg = Config.model_validate({
            "source": {"kind": "replay", "path": str(stack), "channel": 1},
            "model": {"lags": [4, 2, 1], "base_channels": 4, "levels": 1, "device": "cpu", "seed": 3},
            "train": {"mode": "fixed", "steps_per_frame": 1, "warmup_steps": 5, "batch": 2, "crop": 16, "history": 16},
            "monitor": {"mode": "off"}, "output": {"path": str(tmp_path / name)}})
        execute(build_run(cfg, adapter=GappyReplay(str(stack), channel=1)))
        paths.append(tmp_path / name)
    return paths


def test_inspect_and_export_read_a_store_as_they_read_the_hdf5_file(tmp_path, store_and_file):
    from lagsplit.inspect_file import summarize

    store, h5 = store_and_file
    a, b = summarize(store), summarize(h5)
    assert a["format"] == "OME-Zarr" and b["format"] == "HDF5"
    for key in ("frames", "shape", "input_dtype", "component_dtype", "lags", "first_index", "last_index", "gaps",
                "warmup_frames", "model_versions", "train_steps", "final_loss", "counters", "flagged", "gate",
                "resumes", "open_for_write", "whole_rows", "source"):
        assert a[key] == b[key], key
    assert a["gaps"] == [{"first_index": 10, "count": 3, "reason": "missing"}]
    for run in (store, h5):
        res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / f"{run.name}.ome.tif")])
        assert res.exit_code == 0, res.output
    import tifffile

    with tifffile.TiffFile(tmp_path / "run.ome.zarr.ome.tif") as t1, tifffile.TiffFile(tmp_path / "run.h5.ome.tif") as t2:
        np.testing.assert_array_equal(t1.asarray(), t2.asarray())
        assert t1.ome_metadata.split("<Pixels")[1].split(">")[0] == t2.ome_metadata.split("<Pixels")[1].split(">")[0]


def test_the_napari_reader_and_the_follower_open_a_store_as_an_hdf5_file(store_and_file):
    npe2 = pytest.importorskip("npe2")
    from lagsplit.napari.follow import RunFollower

    store, h5 = store_and_file
    looks = {}
    for p in (store, h5):
        follower = RunFollower(p, keep=8)
        try:
            looks[p] = follower.poll()
        finally:
            follower.close()
    assert looks[store].total == looks[h5].total == 27 and looks[store].first_row == 19
    for name in ("raw", "slow", "fast"):
        np.testing.assert_array_equal(looks[store].images[name], looks[h5].images[name])
    assert looks[store].counters == looks[h5].counters and looks[store].rows.gaps == looks[h5].rows.gaps

    pm = npe2.PluginManager.instance()
    pm.discover()
    layers = {p: npe2.read([str(p)], stack=False, plugin_name="lagsplit") for p in (store, h5)}
    assert [kw["name"] for _, kw, _ in layers[store]] == [kw["name"] for _, kw, _ in layers[h5]] == [
        "raw (RFP)", "slow", "fast", "frame"]
    for (d1, k1, t1), (d2, k2, t2) in zip(layers[store], layers[h5], strict=True):
        assert t1 == t2 and k1["scale"] == pytest.approx(k2["scale"]) and k1.get("contrast_limits") == k2.get("contrast_limits")
        np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
        np.testing.assert_array_equal(k1["metadata"]["lagsplit"]["frame_index"], k2["metadata"]["lagsplit"]["frame_index"])
        assert k1["metadata"]["lagsplit"]["gaps"] == k2["metadata"]["lagsplit"]["gaps"]
    assert layers[store][1][1]["scale"] == pytest.approx((INTERVAL_S, PIXEL_UM, PIXEL_UM))


def test_napari_ome_zarr_opens_each_image_of_the_store(store_and_file):
    reader = pytest.importorskip("napari_ome_zarr._reader")
    store, _ = store_and_file
    for name in ("raw", "slow", "fast"):
        read = reader.napari_get_reader(str(store / name))
        assert read is not None, name
        (data, meta, kind), = read()
        assert kind == "image" and tuple(meta["axis_labels"]) == ("t", "y", "x")
        np.testing.assert_array_equal(data[0].compute(scheduler="synchronous"), read_array(store, name))
        assert meta["scale"] == pytest.approx((INTERVAL_S, PIXEL_UM, PIXEL_UM))


def read_array(store: Path, name: str) -> np.ndarray:
    return zarr.open_group(store, mode="r")[f"{name}/0"][...]


def test_repair_says_a_store_needs_none(tmp_path, noise_stack):
    src, out = tmp_path / "s.npy", tmp_path / "o.ome.zarr"
    np.save(src, noise_stack[:6])
    assert replay(src, out).exit_code == 0
    before = digest(out)
    res = CliRunner().invoke(app, ["repair", str(out)])
    assert res.exit_code == 2 and "is an OME-Zarr store: it needs no repair" in " ".join(res.output.split())
    assert digest(out) == before


def test_a_watched_folder_writes_a_store_and_resumes_it_skipping_the_frames_it_holds(tmp_path, noise_stack):
    import tifffile

    folder, out = tmp_path / "acq", tmp_path / "w.ome.zarr"
    folder.mkdir()
    for i in range(12):
        tifffile.imwrite(folder / f"img_t{i:04}.tif", noise_stack[i])
    (folder / "END").touch()
    args = ["watch", str(folder), "--out", str(out), "--end-marker", "END", *FAST_CLI,
            "--set", "source.settle_s=0.05", "--set", "source.reorder_s=0.2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    for i in (12, 13, 15, 16):  # the acquisition went on; frame 14 never came
        tifffile.imwrite(folder / f"img_t{i:04}.tif", noise_stack[i])
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(read(out, "frames/index"), [*range(14), 15, 16])
    np.testing.assert_array_equal(read(out, "raw"), noise_stack[[*range(14), 15, 16]])
    assert list(zip(read(out, "gaps/first_index").tolist(), read(out, "gaps/count").tolist())) == [(14, 1)]
    assert read(out, "resumes/after_index").tolist() == [11]
    names = zarr.open_group(out, mode="r")["counters"].attrs["names"]
    counters = dict(zip(names, read(out, "counters").tolist()))
    assert counters["processed"] == 16 and counters["received"] == 16
