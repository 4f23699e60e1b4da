"""Pixel size, frame interval and channel name travel from what the source knows (OME-TIFF,
ImageJ TIFF, a ZeroMQ start message) into the run file's attributes, and a replayed stack's
/frames/timestamp holds the acquisition times the file records (or frame x interval)."""
from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
import tifffile
import zmq

from lagsplit.adapters.replay import ReplayAdapter
from lagsplit.adapters.stack_metadata import read_acquisition
from lagsplit.adapters.wire import StreamDecoder, WireError, encode_end, encode_image, encode_start
from lagsplit.adapters.zmq_source import ZmqAdapter

from .run_files import CHANNELS, INTERVAL_S, PIXEL_UM, movie, plane_times, write_ome_stack, write_run
from .support import run_engine


def test_a_replayed_ome_tiff_records_pixel_size_interval_channel_and_acquisition_times(tmp_path):
    out = write_run(tmp_path, channel=1, gaps=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f.attrs["pixel_size_um"], [PIXEL_UM, PIXEL_UM])
        assert f.attrs["frame_interval_s"] == pytest.approx(INTERVAL_S)
        assert f.attrs["channel_name"] == CHANNELS[1]
        times = plane_times()[:, 1]
        np.testing.assert_allclose(f["frames/timestamp"][:], times - times[0], atol=1e-9)  # frame 5: 0.253 s


def test_the_picked_channel_names_the_run_and_its_plane_times(tmp_path):
    stack = write_ome_stack(tmp_path / "s.ome.tif")
    acq = read_acquisition(stack, channel=0)
    assert acq.channel_name == "GFP" and acq.pixel_size_um == pytest.approx((PIXEL_UM, PIXEL_UM))
    np.testing.assert_allclose(acq.times, plane_times()[:, 0])
    frames = [fr.timestamp for fr in ReplayAdapter(str(stack), channel=0, start=4, stop=7)]
    np.testing.assert_allclose(frames, plane_times()[4:7, 0])


def test_an_imagej_tiff_gives_pixel_size_interval_and_frame_times(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, movie(12)[:, 0], imagej=True, resolution=(1 / 0.2, 1 / 0.25),
                     metadata={"axes": "TYX", "finterval": 0.5, "unit": "um"})
    acq = read_acquisition(path)
    assert acq.pixel_size_um == pytest.approx((0.25, 0.2)) and acq.frame_interval_s == 0.5
    adapter = ReplayAdapter(str(path), start=3, fps=0)
    try:
        assert [fr.timestamp for fr in adapter] == pytest.approx([0.5 * i for i in range(3, 12)])
        assert adapter.metadata()["frame_interval_s"] == 0.5
        assert adapter.metadata()["timestamp_origin"] == "acquisition"  # frame number x the recorded interval
    finally:
        adapter.close()


def test_a_stack_without_metadata_records_none(tmp_path):
    np.save(tmp_path / "m.npy", movie(6)[:, 0])
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, movie(6)[:, 0])
    for path in (tmp_path / "m.npy", plain):
        adapter = ReplayAdapter(str(path))
        assert adapter.metadata() == {"timestamp_origin": "played"}  # nothing known; the times are play times
        adapter.close()


def test_a_zeromq_start_message_carries_interval_pixel_size_and_channel_into_the_file(ctx, tmp_path, small_model,
                                                                                      fixed_train):
    frames = movie(16)[:, 0]
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
    adapter = ZmqAdapter(endpoint, context=ctx)

    def sender():
        sock.send_multipart(encode_start("s", frames.shape[1:], frames.dtype, 0.1, pixel_size_um=0.065, channel="mCherry"))
        for i, fr in enumerate(frames):
            sock.send_multipart(encode_image("s", i, fr, t=100.0 + 0.1 * i))
        sock.send_multipart(encode_end("s", len(frames)))

    t = threading.Thread(target=sender)
    t.start()
    try:
        run_engine(adapter, small_model, fixed_train, path=tmp_path / "z.h5")
    finally:
        t.join()
        sock.close(linger=0)
    with h5py.File(tmp_path / "z.h5", "r") as f:
        np.testing.assert_allclose(f.attrs["pixel_size_um"], [0.065, 0.065])
        assert f.attrs["frame_interval_s"] == 0.1 and f.attrs["channel_name"] == "mCherry"
        np.testing.assert_allclose(f["frames/timestamp"][:], 100.0 + 0.1 * np.arange(16))


@pytest.mark.parametrize(("field", "value"), [("pixel_size_um", -1.0), ("pixel_size_um", "big"), ("channel", 3)])
def test_a_bad_start_field_is_refused_naming_it(field, value):
    import json

    header = json.loads(encode_start("s", (4, 4), np.uint16)[0])
    header[field] = value
    with pytest.raises(WireError, match=field):
        StreamDecoder().decode([json.dumps(header).encode()])
