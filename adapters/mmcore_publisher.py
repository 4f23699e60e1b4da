"""Send a pymmcore-plus acquisition's frames to `lagsplit attach` over ZeroMQ.

pymmcore-plus runs multi-dimensional acquisitions (MDA) on Micro-Manager's core;
every acquired image is announced by ``core.mda.events.frameReady``. This tool
connects to those events and sends each frame in lagsplit's wire protocol
(adapters/wire.py): ``start`` before the first frame, one ``image`` per frame
numbered in acquisition order, ``end`` when the sequence finishes.

On a real microscope (Micro-Manager config file)::

    python -m lagsplit.adapters.mmcore_publisher --config MMConfig.cfg --frames 500 --interval-ms 50 tcp://*:5555
    lagsplit attach tcp://MICROSCOPE-PC:5555 --out run.h5          # on the analysis machine

Without one: the same with no ``--config`` runs pymmcore-plus's UniMMCore with
``MovieCamera``, a camera written in pure Python (no Micro-Manager download).

From your own acquisition script::

    from lagsplit.adapters.mmcore_publisher import MDAPublisher
    sender = MDAPublisher(core, "tcp://*:5555")      # core: CMMCorePlus / UniMMCore
    sender.wait_ready(timeout_s=30)                  # until `lagsplit attach` has connected
    core.mda.run(sequence)
    sender.close()
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

import numpy as np

from .publish import Publisher, PublishStopped

log = logging.getLogger("lagsplit.mmcore")

try:
    from pymmcore_plus.experimental.unicore import SimpleCameraDevice
except ImportError:  # pragma: no cover - pymmcore-plus is optional (pip install pymmcore-plus)
    SimpleCameraDevice = object  # type: ignore[assignment,misc]


class MovieCamera(SimpleCameraDevice):  # type: ignore[misc,valid-type]
    """A pure-Python camera for pymmcore-plus's ``UniMMCore``: each snap returns the next
    frame of ``movie`` (T, H, W), looping. ``snapped`` counts the frames it produced."""

    def __init__(self, movie: np.ndarray) -> None:
        super().__init__()
        if movie.ndim != 3:
            raise ValueError(f"MovieCamera needs a (T, H, W) movie, got shape {movie.shape}")
        self.movie = movie
        self.snapped = 0
        self._exposure_ms = 10.0

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        self._exposure_ms = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        return (int(self.movie.shape[1]), int(self.movie.shape[2]))

    def dtype(self) -> Any:
        return self.movie.dtype

    def snap(self, buffer: np.ndarray) -> dict:
        buffer[:] = self.movie[self.snapped % len(self.movie)]
        self.snapped += 1
        return {"movie_frame": (self.snapped - 1) % len(self.movie)}


def simulated_core(movie: np.ndarray, label: str = "Camera"):
    """A ``UniMMCore`` whose camera is ``MovieCamera(movie)``: a microscope in pure Python."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    # No Micro-Manager installation is needed for a Python camera; keep its search quiet.
    mm_log = logging.getLogger("pymmcore-plus")
    level = mm_log.level
    mm_log.setLevel(logging.CRITICAL)
    try:
        core = UniMMCore()
    finally:
        mm_log.setLevel(level)
    core.loadPyDevice(label, MovieCamera(movie))
    core.initializeDevice(label)
    core.setCameraDevice(label)
    core.setAutoShutter(False)  # there is no shutter to open and close around each snap
    return core


class MDAPublisher:
    """Sends every frame of the pymmcore-plus acquisitions run on ``core`` to ``endpoint``.

    Frames are numbered 0, 1, ... in acquisition order per sequence (the ``frame``
    count pymmcore-plus's ImageSequenceWriter puts in file names); the MDA event's
    index (t, c, z ...) goes into each frame's ``meta``. A frame that cannot be sent
    within ``send_timeout_s`` (no receiver, or one that is far behind) is dropped and
    counted, so the acquisition itself is never held up for longer than that.
    """

    def __init__(self, core: Any, endpoint: str, socket: str = "push", bind: bool | None = None,
                 series: str | None = None, send_timeout_s: float = 1.0, context: Any = None) -> None:
        self.core = core
        self.send_timeout_s = send_timeout_s
        self.publisher = Publisher(endpoint, socket=socket, bind=bind, series=series, context=context)
        self.endpoint = self.publisher.endpoint
        self.frames = 0
        self.dropped = 0
        self._started = False
        self._interval_s: float | None = None
        self._lock = threading.Lock()
        ev = core.mda.events
        ev.sequenceStarted.connect(self._on_started)
        ev.frameReady.connect(self._on_frame)
        ev.sequenceFinished.connect(self._on_finished)

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until a receiver has connected (PUSH) or subscribed (PUB)."""
        return self.publisher.wait_ready(timeout_s)

    def close(self) -> None:
        """Disconnect from the core's events and close the socket (queued frames still leave)."""
        ev = self.core.mda.events
        for sig, slot in ((ev.sequenceStarted, self._on_started), (ev.frameReady, self._on_frame),
                          (ev.sequenceFinished, self._on_finished)):
            try:
                sig.disconnect(slot)
            except Exception:  # noqa: BLE001 - already disconnected
                pass
        self.publisher.close()

    # ---- pymmcore-plus events (called on the acquisition's thread) ------------------------------
    def _on_started(self, sequence: Any, *_: Any) -> None:
        with self._lock:
            self.frames = 0
            self._started = False
            plan = getattr(sequence, "time_plan", None)
            interval = getattr(plan, "interval", None)
            self._interval_s = interval.total_seconds() if hasattr(interval, "total_seconds") else None

    def _on_frame(self, img: np.ndarray, event: Any, *_: Any) -> None:
        index = {str(getattr(k, "value", k)): int(v) for k, v in dict(getattr(event, "index", {}) or {}).items()}
        with self._lock:
            number = self.frames
            self.frames += 1
            try:
                if not self._started:
                    pixel = float(self.core.getPixelSizeUm()) if hasattr(self.core, "getPixelSizeUm") else 0.0
                    channel = getattr(getattr(event, "channel", None), "config", None)
                    self.publisher.start(img.shape, img.dtype, frame_interval_s=self._interval_s,
                                         pixel_size_um=pixel if pixel > 0 else None, channel=channel,
                                         timeout_s=self.send_timeout_s)
                    self._started = True
                if not self.publisher.image(number, img, t=time.time(), meta={"index": index},
                                            timeout_s=self.send_timeout_s):
                    self.dropped += 1
                    log.warning("frame %d dropped: no room to send within %g s", number, self.send_timeout_s)
            except (TimeoutError, PublishStopped) as exc:
                self.dropped += 1
                log.warning("frame %d dropped: %s", number, exc)

    def _on_finished(self, *_: Any) -> None:
        with self._lock:
            if self._started:
                self.publisher.end(self.frames)
            log.info("acquisition finished: %d frame(s), %d dropped", self.frames, self.dropped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("endpoint", help="where to send: tcp://*:5555 (bind) or tcp://HOST:PORT with --connect")
    ap.add_argument("--config", help="Micro-Manager config file of a real microscope (default: a simulated camera)")
    ap.add_argument("--frames", type=int, default=100, help="time points to acquire")
    ap.add_argument("--interval-ms", type=float, default=50.0, help="time between frames, milliseconds")
    ap.add_argument("--exposure-ms", type=float, default=10.0, help="camera exposure, milliseconds")
    ap.add_argument("--size", type=int, default=128, help="simulated camera: frame side in pixels")
    ap.add_argument("--pub", action="store_true", help="PUB socket (for `lagsplit attach --sub`) instead of PUSH")
    ap.add_argument("--connect", action="store_true", help="connect to a receiver that binds (lagsplit attach tcp://*:PORT)")
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a receiver")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pymmcore-plus").setLevel(logging.WARNING)  # not a line per event

    import useq

    if args.config:
        from pymmcore_plus import CMMCorePlus

        core = CMMCorePlus()
        core.loadSystemConfiguration(args.config)
    else:
        from .scenes import make_scene

        movie = make_scene("filaments", frames=min(args.frames, 200), size=args.size).movie
        core = simulated_core(movie)
    core.setExposure(args.exposure_ms)
    sender = MDAPublisher(core, args.endpoint, socket="pub" if args.pub else "push",
                          bind=False if args.connect else None)
    try:
        print(f"sending on {sender.endpoint}; waiting up to {args.wait:g} s for a receiver", flush=True)
        if not sender.wait_ready(args.wait):
            print("no receiver connected", file=sys.stderr)
            return 1
        seq = useq.MDASequence(time_plan={"interval": args.interval_ms / 1000.0, "loops": args.frames})
        core.mda.run(seq)
        print(f"sent {sender.frames - sender.dropped} of {sender.frames} frame(s)", flush=True)
    except KeyboardInterrupt:
        core.mda.cancel()
        sender.publisher.stop()
        return 130
    finally:
        sender.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
