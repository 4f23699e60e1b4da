"""Faults of the live sources, on real sockets and a real folder: the ZeroMQ sender goes away
and comes back (PULL and SUB), the watched folder is deleted and made again. Reported, and
the run recovers, or stops cleanly when told to."""
from __future__ import annotations

import shutil
import threading
import time

import h5py
import numpy as np
import pytest
import tifffile
import zmq
from typer.testing import CliRunner

from lagsplit.adapters.wire import encode_end, encode_image, encode_start
from lagsplit.adapters.zmq_source import ZmqAdapter
from lagsplit.cli import app
from tests.support import FAST_CLI

SHAPE = (16, 20)
MOVIE = np.random.default_rng(3).poisson(40, (12, *SHAPE)).astype(np.uint16)


def _sender(ctx: zmq.Context, kind: int, port: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 2000)
    for _ in range(50):  # the port the previous sender left may take a moment to free
        try:
            sock.bind(f"tcp://127.0.0.1:{port}")
            return sock
        except zmq.ZMQError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} stayed busy")


@pytest.mark.parametrize("kind", ["pull", "sub"])
def test_a_zeromq_sender_that_goes_away_and_comes_back_is_followed_again(ctx, kind):
    # XPUB is a PUB that hears subscriptions: the sender waits for the receiver's, so no
    # frame goes out before anyone listens (PUB drops those, by design)
    send_kind = zmq.PUSH if kind == "pull" else zmq.XPUB
    sock = ctx.socket(send_kind)
    sock.setsockopt(zmq.LINGER, 2000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")  # the receiver connects to a listening sender
    adapter = ZmqAdapter(f"tcp://127.0.0.1:{port}", socket=kind, bind=False, idle_timeout_s=30, context=ctx)
    got: list[int] = []

    def receive() -> None:
        got.extend(f.index for f in adapter)

    adapter.open()
    reader = threading.Thread(target=receive)
    reader.start()
    try:
        for first, last, final in ((0, 6, False), (6, 12, True)):  # the acquisition PC restarts its sender
            if sock is None:
                sock = _sender(ctx, send_kind, port)
            if send_kind == zmq.XPUB:
                assert sock.poll(30000), f"the receiver never subscribed to sender {first // 6 + 1}"
                sock.recv()  # its subscription
            else:
                time.sleep(0.5)  # the receiver reconnects before anything is sent
            sock.send_multipart(encode_start("run", SHAPE, MOVIE.dtype))
            for i in range(first, last):
                sock.send_multipart(encode_image("run", i, MOVIE[i], t=float(i)))
            if final:
                sock.send_multipart(encode_end("run", len(MOVIE)))
            time.sleep(0.3)
            sock.close()
            sock = None
        reader.join(15)
    finally:
        if sock is not None:
            sock.close(linger=0)
        adapter.stop()
        reader.join(5)
        adapter.close()
    assert got == list(range(len(MOVIE)))  # both senders' frames, the repeated start taken as the same series
    assert adapter.ended is not None and adapter.counters()["rejected"] == 0


def _watch(folder, out, *extra):
    return CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--end-marker", "END", *FAST_CLI,
                                    "--set", "source.settle_s=0.05", "--set", "source.reorder_s=0.2",
                                    "--set", "source.poll_interval_s=0.1", *extra])


def _write(folder, numbers, pause=0.1):
    for i in numbers:
        tifffile.imwrite(folder / f"img_t{i:04}.tif", MOVIE[i])
        time.sleep(pause)


def test_a_watched_folder_deleted_and_made_again_is_followed_again(tmp_path):
    folder, out = tmp_path / "acq", tmp_path / "w.h5"
    folder.mkdir()
    _write(folder, range(4), pause=0)

    def acquisition() -> None:
        time.sleep(1.5)
        shutil.rmtree(folder)  # someone clears the folder mid-run, then the software makes it again
        time.sleep(1.0)
        folder.mkdir()
        _write(folder, range(4, 8))
        (folder / "END").touch()

    writer = threading.Thread(target=acquisition)
    writer.start()
    res = _watch(folder, out, "--idle-timeout", "5")  # a watch that lost the folder ends, and fails below
    writer.join()
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(8))
        np.testing.assert_array_equal(f["raw"][:], MOVIE[:8])
    said = " ".join(res.output.split())  # the log, as the user sees it
    assert f"the watched folder {folder} is gone: waiting for it to come back" in said
    assert f"the watched folder {folder} is back after" in said


def test_a_watched_folder_gone_longer_than_allowed_ends_the_run_cleanly(tmp_path):
    folder, out = tmp_path / "acq", tmp_path / "w.h5"
    folder.mkdir()
    _write(folder, range(4), pause=0)
    remover = threading.Timer(1.5, shutil.rmtree, args=(folder,))
    remover.start()
    res = _watch(folder, out, "--set", "source.gone_timeout_s=0.5")
    remover.join()
    assert res.exit_code == 0, res.output
    assert f"watch ends: the watched folder {folder} was gone for 0.5 s" in " ".join(res.output.split())
    with h5py.File(out, "r") as f:  # closed cleanly, every frame it had
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(4))
