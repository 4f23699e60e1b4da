"""``lagsplit export``: a real run file written as an OME-TIFF and read back with tifffile:
axes, shape, pixel size, interval, channel names, plane times and every pixel of each
channel equal to the file's datasets."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from lagsplit.cli import app

from .run_files import INTERVAL_S, PIXEL_UM, plane_times, write_run
from .support import FAST_CLI


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("export"))


def _pixels(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    ns = {"ome": root.tag.split("}")[0].strip("{")}
    return root.find("ome:Image/ome:Pixels", ns), ns


def test_export_writes_raw_slow_fast_as_channels_with_pixel_size_and_interval(run_file, tmp_path):
    out = tmp_path / "run.ome.tif"
    res = CliRunner().invoke(app, ["export", str(run_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with tifffile.TiffFile(out) as tif, h5py.File(run_file, "r") as f:
        series = tif.series[0]
        n = len(f["frames/index"])
        assert series.axes == "TCYX" and series.shape == (n, 3, 24, 32) and series.dtype == np.float32
        data = series.asarray()
        for c, name in enumerate(("raw", "slow", "fast")):
            np.testing.assert_array_equal(data[:, c], f[name][:].astype(np.float32))
        pixels, ns = _pixels(tif.ome_metadata)
        assert float(pixels.get("PhysicalSizeX")) == PIXEL_UM == float(pixels.get("PhysicalSizeY"))
        assert float(pixels.get("TimeIncrement")) == INTERVAL_S and pixels.get("TimeIncrementUnit") == "s"
        names = [ch.get("Name") for ch in pixels.findall("ome:Channel", ns)]
        assert names == ["raw (RFP)", "slow (RFP)", "fast (RFP)"]
        planes = pixels.findall("ome:Plane", ns)
        t = f["frames/timestamp"][:]
        delta = [float(p.get("DeltaT")) for p in planes if p.get("TheC") == "0"]
        np.testing.assert_allclose(delta, t - t[0], atol=1e-9)
    assert f"wrote {out}: {n} frames" in res.output and "0.13 um/px, 0.05 s/frame" in res.output


def test_export_of_a_range_and_some_channels_keeps_their_pixels(run_file, tmp_path):
    out = tmp_path / "part.ome.tif"
    res = CliRunner().invoke(app, ["export", str(run_file), "--out", str(out), "--start", "4", "--stop", "9",
                                   "--channels", "fast,slow"])
    assert res.exit_code == 0, res.output
    with h5py.File(run_file, "r") as f:
        data = tifffile.imread(out)
        assert data.shape == (5, 2, 24, 32)
        np.testing.assert_array_equal(data[:, 0], f["fast"][4:9])
        np.testing.assert_array_equal(data[:, 1], f["slow"][4:9])
    raw = tmp_path / "raw.ome.tif"
    assert CliRunner().invoke(app, ["export", str(run_file), "--out", str(raw), "--channels", "raw"]).exit_code == 0
    with tifffile.TiffFile(raw) as tif, h5py.File(run_file, "r") as f:
        assert tif.series[0].dtype == np.uint16  # raw alone keeps its own type
        pixels, _ = _pixels(tif.ome_metadata)
        assert (pixels.get("SizeT"), pixels.get("SizeC")) == (str(len(f["raw"])), "1")
        np.testing.assert_array_equal(tif.series[0].asarray(), f["raw"][:])  # tifffile drops the C of 1


@pytest.mark.parametrize(("args", "message"), [
    (["--channels", "slow,green"], "unknown channel(s) green"),
    (["--start", "500"], "--start 500 is outside the run"),
    (["--start", "5", "--stop", "5"], "--stop 5 must be after --start 5"),
])
def test_a_bad_export_request_is_one_clear_error_and_writes_nothing(run_file, tmp_path, args, message):
    out = tmp_path / "x.ome.tif"
    res = CliRunner().invoke(app, ["export", str(run_file), "--out", str(out), *args])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not out.exists()


def test_export_refuses_to_replace_a_file_and_a_foreign_h5(run_file, tmp_path):
    out = tmp_path / "keep.ome.tif"
    out.write_bytes(b"precious")
    res = CliRunner().invoke(app, ["export", str(run_file), "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output and out.read_bytes() == b"precious"
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("data", data=np.zeros((2, 4, 4)))
    res = CliRunner().invoke(app, ["export", str(foreign), "--out", str(tmp_path / "o.ome.tif")])
    assert res.exit_code == 2 and "not a lagsplit output file" in res.output


# ---- plane times: only the acquisition's ---------------------------------------------------------

def _plane_delta_t(path) -> list[float]:
    """DeltaT of channel 0's planes in an exported OME-TIFF ([] when the planes carry none)."""
    with tifffile.TiffFile(path) as tif:
        pixels, ns = _pixels(tif.ome_metadata)
    return [float(p.get("DeltaT")) for p in pixels.findall("ome:Plane", ns)
            if p.get("TheC") == "0" and p.get("DeltaT") is not None]


def test_the_stacks_recorded_plane_times_are_exported_as_delta_t(run_file, tmp_path):
    out = tmp_path / "run.ome.tif"
    assert CliRunner().invoke(app, ["export", str(run_file), "--out", str(out)]).exit_code == 0
    with h5py.File(run_file, "r") as f:
        assert f.attrs["timestamp_origin"] == "acquisition"
        index = f["frames/index"][:]
    recorded = plane_times()[:, 1]  # the run replayed channel 1
    np.testing.assert_allclose(_plane_delta_t(out), recorded[index] - recorded[index[0]], atol=1e-9)


def _replay(tmp_path, stack, *args):
    out = tmp_path / "run.h5"
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(out), *FAST_CLI, "--set", "source.stop=10",
                                   *args])
    assert res.exit_code == 0, res.output
    return out


def test_a_replay_without_recorded_times_exports_no_plane_times(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    run = _replay(tmp_path, src, "--fps", "100")
    with h5py.File(run, "r") as f:
        assert f.attrs["timestamp_origin"] == "played"
        assert np.ptp(f["frames/timestamp"][:]) > 0  # the moments the frames were played, kept in the file
    out = tmp_path / "run.ome.tif"
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(out)])
    assert res.exit_code == 0 and "interval unknown" in res.output, res.output
    assert _plane_delta_t(out) == []
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].shape[0] == 10 and "TimeIncrement" not in _pixels(tif.ome_metadata)[0].attrib


def test_a_recorded_interval_gives_delta_t_of_frame_number_times_interval(tmp_path, noise_stack):
    src = tmp_path / "ij.tif"
    tifffile.imwrite(src, noise_stack, imagej=True, metadata={"axes": "TYX", "finterval": 0.25})
    run = _replay(tmp_path, src, "--set", "source.start=3", "--set", "source.stop=9")
    out = tmp_path / "run.ome.tif"
    assert CliRunner().invoke(app, ["export", str(run), "--out", str(out)]).exit_code == 0
    np.testing.assert_allclose(_plane_delta_t(out), 0.25 * np.arange(6), atol=1e-9)


def test_a_file_that_does_not_say_where_its_times_come_from_exports_no_plane_times(run_file, tmp_path):
    older = tmp_path / "older.h5"
    shutil.copy(run_file, older)
    with h5py.File(older, "r+") as f:
        del f.attrs["timestamp_origin"]
    out = tmp_path / "older.ome.tif"
    assert CliRunner().invoke(app, ["export", str(older), "--out", str(out)]).exit_code == 0
    assert _plane_delta_t(out) == []
