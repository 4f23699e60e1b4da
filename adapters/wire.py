"""The ZeroMQ wire protocol, version 1 (docs/design.md §3): encoding, decoding, checking.

Shared by the receiving adapter (``adapters.zmq_source``) and the sending side
(``adapters.publish``, ``lagsplit.adapters.mmcore_publisher``), so both speak exactly
the same thing. No sockets here: parts in, parts out.

Each message is multipart. Part 0 is a UTF-8 JSON header; image messages carry
part 1, the raw frame bytes in C order, exactly ``prod(shape) * itemsize`` long::

    {"v": 1, "type": "start", "series": "run-42", "shape": [512, 512], "dtype": "<u2", "frame_interval_s": 0.05,
     "pixel_size_um": 0.108, "channel": "GFP"}
    {"v": 1, "type": "image", "series": "run-42", "frame": 17, "t": 1732400000.125, "meta": {...}}
    {"v": 1, "type": "end",   "series": "run-42", "frames": 300}

Shape is (y, x) in pixels, ``t`` the acquisition time in seconds since the epoch,
``frame`` the acquisition frame number. An image may also carry ``shape`` and
``dtype``; they must then equal the series'. ``frame_interval_s``, ``pixel_size_um``
(micrometres) and ``channel`` (a name) are optional; a run stores them as file attributes.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
MESSAGE_TYPES = ("start", "image", "end")


class WireError(ValueError):
    """A message that breaks the protocol; the text says what is wrong with it. ``frame`` is
    the frame number of a rejected image when its header names a valid one."""

    def __init__(self, message: str, frame: int | None = None) -> None:
        super().__init__(message)
        self.frame = frame


@dataclass(frozen=True)
class Start:
    """A series begins: every image that follows has this shape (y, x) and dtype."""

    series: str
    shape: tuple[int, int]
    dtype: np.dtype
    frame_interval_s: float | None = None
    repeated: bool = False
    """True when this start repeats the running series' (harmless, e.g. for late subscribers)."""
    pixel_size_um: float | None = None
    channel: str | None = None


@dataclass(frozen=True)
class Image:
    """One frame: its acquisition number, time (epoch seconds or None) and pixels."""

    series: str
    frame: int
    t: float | None
    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    """The series is over; ``frames`` is how many images the sender says it sent (if it says)."""

    series: str
    frames: int | None = None


Message = Start | Image | End


# ---- encoding ---------------------------------------------------------------------------------
def _header(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_start(series: str, shape: Sequence[int], dtype: Any, frame_interval_s: float | None = None,
                 pixel_size_um: float | None = None, channel: str | None = None) -> list[bytes]:
    """The ``start`` message of a series of (y, x) frames of ``dtype``."""
    h: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "start", "series": series,
                         "shape": [int(s) for s in shape], "dtype": np.dtype(dtype).str}
    if frame_interval_s is not None:
        h["frame_interval_s"] = float(frame_interval_s)
    if pixel_size_um is not None:
        h["pixel_size_um"] = float(pixel_size_um)
    if channel is not None:
        h["channel"] = str(channel)
    return [_header(h)]


def encode_image(series: str, frame: int, array: np.ndarray, t: float | None = None,
                 meta: dict[str, Any] | None = None, describe: bool = False) -> list[Any]:
    """An ``image`` message. The second part is a view of ``array``'s memory (no copy when
    it is C-contiguous). ``describe`` adds ``shape`` and ``dtype`` to the header."""
    arr = np.ascontiguousarray(array)
    h: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "image", "series": series, "frame": int(frame)}
    if t is not None:
        h["t"] = float(t)
    if meta:
        h["meta"] = meta
    if describe:
        h["shape"] = list(arr.shape)
        h["dtype"] = arr.dtype.str
    return [_header(h), memoryview(arr.reshape(-1).view(np.uint8))]


def encode_end(series: str, frames: int | None = None) -> list[bytes]:
    """The ``end`` message; ``frames`` is how many images were sent."""
    h: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "end", "series": series}
    if frames is not None:
        h["frames"] = int(frames)
    return [_header(h)]


# ---- decoding ---------------------------------------------------------------------------------
def _as_bytes(part: Any) -> bytes:
    b = getattr(part, "bytes", part)  # zmq.Frame (copy=False) or bytes
    return bytes(b)


def _as_buffer(part: Any) -> memoryview:
    buf = memoryview(getattr(part, "buffer", part))  # zmq.Frame exposes its memory without a copy
    return buf if buf.format == "B" and buf.ndim == 1 else buf.cast("B")


def decode_header(part: Any) -> dict[str, Any]:
    """Parse and check part 0: a JSON object of our protocol version with a known type."""
    raw = _as_bytes(part)
    try:
        h = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        shown = raw[:60] + (b"..." if len(raw) > 60 else b"")
        raise WireError(f"header is not UTF-8 JSON ({exc}): {shown!r}") from None
    if not isinstance(h, dict):
        raise WireError(f"header must be a JSON object, got {type(h).__name__}")
    if "v" not in h:
        raise WireError('header has no protocol version "v"')
    if h["v"] != PROTOCOL_VERSION or isinstance(h["v"], bool):
        raise WireError(f"unknown protocol version {h['v']!r} (this receiver speaks version {PROTOCOL_VERSION})")
    if h.get("type") not in MESSAGE_TYPES:
        raise WireError(f"unknown message type {h.get('type')!r} (known: {', '.join(MESSAGE_TYPES)})")
    if "series" in h and not isinstance(h["series"], str):
        raise WireError(f'"series" must be a string, got {h["series"]!r}')
    return h


def parse_shape(value: Any) -> tuple[int, int]:
    """A (y, x) shape: two positive integers."""
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)):
        raise WireError(f'"shape" must be [y, x] with two positive integers, got {value!r}')
    return int(value[0]), int(value[1])


def parse_dtype(value: Any) -> np.dtype:
    """A numeric numpy dtype string such as "<u2" or "float32"."""
    if not isinstance(value, str):
        raise WireError(f'"dtype" must be a string such as "<u2", got {value!r}')
    try:
        dt = np.dtype(value)
    except TypeError:
        raise WireError(f'"dtype" {value!r} is not a numpy dtype') from None
    if dt.kind not in "uif" or dt.itemsize == 0:
        raise WireError(f'"dtype" {value!r} is not a numeric pixel type (unsigned, signed or float)')
    return dt


class StreamDecoder:
    """Protocol state of one receiving end: the series a ``start`` announced and the last
    accepted frame number. ``decode`` returns a message or raises WireError; a rejected
    message changes no state, so the stream goes on."""

    def __init__(self) -> None:
        self.series: Start | None = None
        self.last_frame: int | None = None

    def decode(self, parts: Sequence[Any]) -> Message:
        if not parts:
            raise WireError("empty message")
        h = decode_header(parts[0])
        kind = h["type"]
        want = 2 if kind == "image" else 1
        if len(parts) != want:
            raise WireError(f"{kind} message must have {want} part(s), got {len(parts)}")
        if kind == "start":
            return self._start(h)
        if kind == "image":
            return self._image(h, parts[1])
        return self._end(h)

    def _start(self, h: dict[str, Any]) -> Start:
        series = h.get("series")
        if not series:
            raise WireError('start message has no "series" name')
        shape, dtype = parse_shape(h.get("shape")), parse_dtype(h.get("dtype"))
        interval = h.get("frame_interval_s")
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                     or not math.isfinite(interval) or interval < 0):
            raise WireError(f'"frame_interval_s" must be a non-negative number of seconds, got {interval!r}')
        pixel, channel = h.get("pixel_size_um"), h.get("channel")
        if pixel is not None and (isinstance(pixel, bool) or not isinstance(pixel, (int, float))
                                  or not math.isfinite(pixel) or pixel <= 0):
            raise WireError(f'"pixel_size_um" must be a positive number of micrometres, got {pixel!r}')
        if channel is not None and not isinstance(channel, str):
            raise WireError(f'"channel" must be a name (a string), got {channel!r}')
        cur = self.series
        if cur is not None:
            if (series, shape, dtype) == (cur.series, cur.shape, cur.dtype):
                return Start(series, shape, dtype, interval, repeated=True, pixel_size_um=pixel, channel=channel)
            raise WireError(
                f"start of series {series!r} ({shape[0]}x{shape[1]} {dtype.str}) while series {cur.series!r} "
                f"({cur.shape[0]}x{cur.shape[1]} {cur.dtype.str}) is running; one run takes one series")
        self.series = Start(series, shape, dtype, interval, pixel_size_um=pixel, channel=channel)
        return self.series

    def _image(self, h: dict[str, Any], body: Any) -> Image:
        cur = self.series
        frame = h.get("frame")
        label = f"image {frame!r}" if frame is not None else "image"
        if cur is None:
            raise WireError(f"{label} before start: no series is running")
        if "series" in h and h["series"] != cur.series:
            raise WireError(f"{label} of series {h['series']!r}, but series {cur.series!r} is running")
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise WireError(f'"frame" must be a non-negative integer, got {frame!r}')
        if "shape" in h and parse_shape(h["shape"]) != cur.shape:
            raise WireError(f"{label}: shape {list(h['shape'])} differs from the series' {list(cur.shape)}", frame=frame)
        if "dtype" in h and parse_dtype(h["dtype"]) != cur.dtype:
            raise WireError(f"{label}: dtype {h['dtype']!r} differs from the series' {cur.dtype.str!r}", frame=frame)
        t = h.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise WireError(f'{label}: "t" must be a number of seconds, got {t!r}', frame=frame)
        meta = h.get("meta") or {}
        if not isinstance(meta, dict):
            raise WireError(f'{label}: "meta" must be a JSON object, got {type(meta).__name__}', frame=frame)
        buf = _as_buffer(body)
        want = cur.shape[0] * cur.shape[1] * cur.dtype.itemsize
        if buf.nbytes != want:
            raise WireError(f"{label}: {buf.nbytes} bytes, expected {want} "
                            f"({cur.shape[0]}x{cur.shape[1]} {cur.dtype.str})", frame=frame)
        if self.last_frame is not None and frame <= self.last_frame:
            raise WireError(f"{label} is not after frame {self.last_frame} (duplicate or out of order)")
        array = np.frombuffer(buf, dtype=cur.dtype).reshape(cur.shape)
        self.last_frame = frame
        return Image(cur.series, frame, None if t is None else float(t), array, meta)

    def _end(self, h: dict[str, Any]) -> End:
        cur = self.series
        if cur is None:
            raise WireError("end before start: no series is running")
        if "series" in h and h["series"] != cur.series:
            raise WireError(f"end of series {h['series']!r}, but series {cur.series!r} is running")
        frames = h.get("frames")
        if frames is not None and (not isinstance(frames, int) or isinstance(frames, bool) or frames < 0):
            raise WireError(f'"frames" must be a non-negative integer, got {frames!r}')
        return End(cur.series, frames)


__all__ = ["PROTOCOL_VERSION", "End", "Image", "Start", "StreamDecoder", "WireError",
           "decode_header", "encode_end", "encode_image", "encode_start"]
