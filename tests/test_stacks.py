"""Reading recorded stacks: the axes of ImageJ / OME-TIFF files and of plain arrays, the
plane a user picks, and the file closed by the one context-managed reader."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from lagsplit.adapters.replay import ReplayAdapter
from lagsplit.adapters.stacks import StackError, open_stack

T, Z, C, H, W = 5, 3, 2, 6, 7


@pytest.fixture
def tzc() -> np.ndarray:
    """(T, Z, C, H, W) uint16 where every pixel of plane (t, z, c) holds 100 t + 10 z + c, plus
    a ramp over the plane, so a frame read from the wrong time, z or channel shows."""
    t, z, c = np.meshgrid(np.arange(T), np.arange(Z), np.arange(C), indexing="ij")
    value = (100 * t + 10 * z + c).astype(np.uint16)[..., None, None]
    ramp = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 1000
    return value + ramp


def _frames(spec, **kw) -> np.ndarray:
    with open_stack(spec, **kw) as stack:
        return stack.read()


# ---- TIFF: ImageJ and OME axes ---------------------------------------------------------------------

def _imagej(path, data, axes):
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes})
    return path


def _ome(path, data, axes):
    tifffile.imwrite(path, data, ome=True, metadata={"axes": axes})
    return path


@pytest.mark.parametrize("writer", [_imagej, _ome], ids=["imagej", "ome"])
def test_a_two_channel_tiff_plays_the_chosen_channel_in_time_order(tmp_path, tzc, writer):
    path = writer(tmp_path / "tcyx.ome.tif", tzc[:, 0], "TCYX")
    for c in range(C):
        np.testing.assert_array_equal(_frames(path, channel=c), tzc[:, 0, c])


@pytest.mark.parametrize("writer", [_imagej, _ome], ids=["imagej", "ome"])
def test_a_z_stack_over_time_plays_the_chosen_plane(tmp_path, tzc, writer):
    path = writer(tmp_path / "tzyx.ome.tif", tzc[:, :, 0], "TZYX")
    np.testing.assert_array_equal(_frames(path, z=2), tzc[:, 2, 0])
    path5 = writer(tmp_path / "tzcyx.ome.tif", tzc, "TZCYX")
    np.testing.assert_array_equal(_frames(path5, z=1, channel=1), tzc[:, 1, 1])


def test_an_ome_tiff_with_channels_outermost_still_plays_in_time_order(tmp_path, tzc):
    path = _ome(tmp_path / "ctyx.ome.tif", np.ascontiguousarray(np.moveaxis(tzc[:, 0], 1, 0)), "CTYX")
    np.testing.assert_array_equal(_frames(path, channel=1), tzc[:, 0, 1])


@pytest.mark.parametrize(("writer", "axes", "pick", "needs"), [
    (_imagej, "TCYX", lambda d: d[:, 0], ["--channel N, 0..1"]),
    (_ome, "TCYX", lambda d: d[:, 0], ["--channel N, 0..1"]),
    (_imagej, "TZYX", lambda d: d[:, :, 0], ["--z N, 0..2"]),
    (_ome, "TZCYX", lambda d: d, ["--channel N, 0..1", "--z N, 0..2"]),
])
def test_channels_or_z_without_a_choice_are_refused_naming_the_axes_and_the_option(tmp_path, tzc, writer, axes,
                                                                                    pick, needs):
    path = writer(tmp_path / "s.ome.tif", pick(tzc), axes)
    with pytest.raises(StackError) as err:
        open_stack(path)
    assert f"axes {axes}" in str(err.value)
    for option in needs:
        assert option in str(err.value)


def test_a_plane_out_of_range_is_refused_with_the_count(tmp_path, tzc):
    path = _imagej(tmp_path / "s.tif", tzc[:, 0], "TCYX")
    with pytest.raises(StackError, match=r"--channel 2 is out of range: the stack has 2 channels \(0..1\)"):
        open_stack(path, channel=2)
    with pytest.raises(StackError, match=r"--z 1, but the stack has a single z-plane"):
        open_stack(path, channel=0, z=1)


def test_an_imagej_stack_of_slices_is_not_taken_for_time_unless_the_user_says_so(tmp_path, tzc):
    path = _imagej(tmp_path / "slices.tif", tzc[:, 0, 0], "ZYX")  # how ImageJ saves a plain stack
    with pytest.raises(StackError) as err:
        open_stack(path)
    assert "axes ZYX" in str(err.value) and "--z N" in str(err.value) and "--axes TYX" in str(err.value)
    np.testing.assert_array_equal(_frames(path, axes="TYX"), tzc[:, 0, 0])
    np.testing.assert_array_equal(_frames(path, z=3), tzc[3:4, 0, 0])


def test_a_tiff_without_axis_metadata_is_a_time_series(tmp_path, tzc):
    path = tmp_path / "plain.tif"
    movie = np.concatenate([tzc[:, 0, 0]] * 2)  # 10 pages: tifffile writes them as a shaped series
    tifffile.imwrite(path, movie)
    np.testing.assert_array_equal(_frames(path), movie)


# ---- arrays without axes: .npy and HDF5 ----------------------------------------------------------

def _npy(tmp_path, data):
    np.save(tmp_path / "a.npy", data)
    return str(tmp_path / "a.npy")


def _h5(tmp_path, data):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["acquisition/images"] = data
    return f"{tmp_path / 'a.h5'}:/acquisition/images"


@pytest.mark.parametrize("store", [_npy, _h5], ids=["npy", "h5"])
def test_a_4d_array_is_refused_naming_its_shape_until_channel_or_z_says_what_it_holds(tmp_path, tzc, store):
    spec = store(tmp_path, tzc[:, 0])
    with pytest.raises(StackError) as err:
        open_stack(spec)
    assert f"shape {(T, C, H, W)}" in str(err.value)
    assert "--channel N reads it as (T, C, Y, X)" in str(err.value) and "--z N as (T, Z, Y, X)" in str(err.value)
    np.testing.assert_array_equal(_frames(spec, channel=1), tzc[:, 0, 1])
    np.testing.assert_array_equal(_frames(spec, z=0), tzc[:, 0, 0])


@pytest.mark.parametrize("store", [_npy, _h5], ids=["npy", "h5"])
def test_a_5d_array_is_time_z_channel(tmp_path, tzc, store):
    spec = store(tmp_path, tzc)
    with pytest.raises(StackError, match="axes TZCYX"):
        open_stack(spec, channel=1)
    np.testing.assert_array_equal(_frames(spec, z=2, channel=1), tzc[:, 2, 1])


def test_size_one_dimensions_and_axes_override(tmp_path, tzc):
    np.testing.assert_array_equal(_frames(_npy(tmp_path, tzc[:, :1, 1])), tzc[:, 0, 1])  # (T, 1, H, W)
    # --axes replaces what is assumed: a stack stored (T, X, Y) plays transposed back to (Y, X)
    stored = np.ascontiguousarray(tzc[:, 0, 0].transpose(0, 2, 1))
    np.testing.assert_array_equal(_frames(_npy(tmp_path, stored), axes="TXY"), tzc[:, 0, 0])
    with pytest.raises(StackError, match="unknown letter"):
        open_stack(_npy(tmp_path, stored), axes="TQYX")


def test_hdf5_without_a_dataset_lists_nested_datasets(tmp_path, tzc):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["acquisition/images"] = tzc[:, 0, 0]
        f["acquisition/meta/exposure"] = np.ones(T)  # 1-D: not a stack
    with pytest.raises(StackError) as err:
        open_stack(path)
    assert f"/acquisition/images {(T, H, W)}" in str(err.value)
    assert "exposure" not in str(err.value)


# ---- the one reader: ranges, closing -----------------------------------------------------------

def test_a_start_past_the_end_is_an_error_naming_the_length(tmp_path, tzc):
    spec = _npy(tmp_path, tzc[:, 0, 0])
    with pytest.raises(StackError, match=rf"source.start = {T} is beyond the stack's end: it has {T} frame"):
        ReplayAdapter(spec, start=T)
    with pytest.raises(StackError, match="source.stop = 2 must be after source.start = 3"):
        ReplayAdapter(spec, start=3, stop=2)
    adapter = ReplayAdapter(spec, start=2, stop=99)  # a stop past the end plays to the end
    frames = list(adapter)
    adapter.close()
    assert [f.index for f in frames] == list(range(2, T))
    np.testing.assert_array_equal(np.stack([f.array for f in frames]), tzc[2:, 0, 0])


@pytest.mark.parametrize("fmt", ["tif", "h5"])
def test_leaving_the_with_block_closes_the_file(tmp_path, tzc, fmt):
    if fmt == "tif":
        path = tmp_path / "s.tif"
        spec = _imagej(path, tzc[:, 0], "TCYX")
    else:
        path = tmp_path / "a.h5"
        spec = _h5(tmp_path, tzc[:, 0])
    with open_stack(spec, channel=0) as stack:
        stack[0]
    with pytest.raises(StackError, match="closed"):
        stack[1]
    if fmt == "h5":
        with h5py.File(path, "a"):  # h5py refuses to reopen a file this process still holds read-only
            pass
    adapter = ReplayAdapter(str(spec), channel=1)
    adapter.close()
    with pytest.raises(StackError, match="closed"):
        adapter.movie[0]
