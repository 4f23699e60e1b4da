"""What a recorded stack says about its acquisition: pixel size, frame interval, channel
name and the time of each frame, from OME-TIFF (OME-XML: PhysicalSizeX/Y, TimeIncrement,
Channel Name, Plane DeltaT) or ImageJ TIFF metadata (XResolution / YResolution with the
``unit``, ``finterval``). Other stacks (.npy, HDF5 datasets, plain TIFF) know nothing:
every field stays None. Replay stores these as the run's file attributes and timestamps."""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("lagsplit.stacks")

# micrometres per unit, as OME and ImageJ spell lengths
_LENGTH_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "\\u00b5m": 1.0,
              "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6}
# seconds per unit, as OME and ImageJ spell times
_TIME_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3,
           "µs": 1e-6, "us": 1e-6, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class Acquisition:
    """What the file records; None where it says nothing."""

    pixel_size_um: tuple[float, float] | None = None
    """(y, x) micrometres."""
    frame_interval_s: float | None = None
    channel_name: str | None = None
    """Name of the channel played."""
    times: np.ndarray | None = None
    """Acquisition time of every time point, seconds from the first (OME Plane DeltaT)."""

    def attrs(self) -> dict:
        """The run-file attributes (adapter ``metadata`` hook): the known fields."""
        found = {"pixel_size_um": None if self.pixel_size_um is None else np.asarray(self.pixel_size_um),
                 "frame_interval_s": self.frame_interval_s, "channel_name": self.channel_name}
        return {k: v for k, v in found.items() if v is not None}

    def frame_times(self, frames: range) -> np.ndarray | None:
        """Acquisition times of ``frames`` (stack time points), seconds: the recorded times,
        else frame number x interval; None when the file records neither."""
        if self.times is not None and len(self.times) >= frames.stop:
            return np.asarray(self.times[frames.start:frames.stop], dtype=np.float64)
        if self.frame_interval_s:
            return np.arange(frames.start, frames.stop, dtype=np.float64) * self.frame_interval_s
        return None


def read_acquisition(path: str | Path, channel: int | None = None, z: int | None = None) -> Acquisition:
    """The acquisition metadata of a stack file (channel ``channel``, z-plane ``z`` where it
    matters); an empty Acquisition for a file that records none or cannot be parsed."""
    path = Path(path)
    if not path.name.lower().endswith((".tif", ".tiff")):
        return Acquisition()
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.ome_metadata:
                return _ome(tif.ome_metadata, channel or 0, z or 0)
            if tif.imagej_metadata is not None:
                return _imagej(tif.imagej_metadata, tif.pages[0])
    except Exception as exc:  # noqa: BLE001 - metadata is a bonus; the pixels are read elsewhere
        log.warning("%s: acquisition metadata not read (%s: %s)", path, type(exc).__name__, exc)
    return Acquisition()


def _positive(value: object, factor: float) -> float | None:
    try:
        v = float(value) * factor  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _ome(xml: str, channel: int, z: int) -> Acquisition:
    root = ET.fromstring(xml)
    ns = {"ome": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    pixels = root.find("ome:Image/ome:Pixels" if ns else "Image/Pixels", ns)
    if pixels is None:
        return Acquisition()
    a = pixels.attrib
    sizes = [_positive(a.get(f"PhysicalSize{k}"), _LENGTH_UM.get(a.get(f"PhysicalSize{k}Unit", "µm"), np.nan))
             for k in ("Y", "X")]
    pixel = (sizes[0] or sizes[1], sizes[1] or sizes[0]) if any(sizes) else None
    interval = _positive(a.get("TimeIncrement"), _TIME_S.get(a.get("TimeIncrementUnit", "s"), np.nan))
    channels = pixels.findall("ome:Channel" if ns else "Channel", ns)
    name = channels[channel].get("Name") if channel < len(channels) else None
    times = _plane_times(pixels.findall("ome:Plane" if ns else "Plane", ns), int(a.get("SizeT", "1")), channel, z)
    if interval is None and times is not None and len(times) > 1:
        steps = np.diff(times)
        interval = _positive(np.median(steps), 1.0)
    return Acquisition(pixel, interval, name or None, times)


def _plane_times(planes: list, size_t: int, channel: int, z: int) -> np.ndarray | None:
    """DeltaT of each time point of the played plane, from the first; None unless every time point has one."""
    times = np.full(size_t, np.nan)
    for p in planes:
        if int(p.get("TheC", 0)) != channel or int(p.get("TheZ", 0)) != z or "DeltaT" not in p.attrib:
            continue
        t = int(p.get("TheT", 0))
        if 0 <= t < size_t:
            times[t] = float(p.get("DeltaT")) * _TIME_S.get(p.get("DeltaTUnit", "s"), np.nan)
    if size_t == 0 or not np.all(np.isfinite(times)):
        return None
    return times - times[0]


def _imagej(meta: dict, page) -> Acquisition:
    unit = str(meta.get("unit", "")).strip()
    factor = _LENGTH_UM.get(unit.lower())
    pixel = None
    if factor is not None:
        sizes = []
        for tag in ("YResolution", "XResolution"):
            res = page.tags.get(tag)
            num, den = res.value if res is not None else (0, 1)
            sizes.append(_positive(den / num if num else None, factor))
        if all(sizes):
            pixel = (sizes[0], sizes[1])
    interval = _positive(meta.get("finterval"), _TIME_S.get(str(meta.get("tunit", "s")).lower(), 1.0))
    return Acquisition(pixel, interval, None, None)
