"""``lagsplit export``: a run file as an OME-TIFF that Fiji (Bio-Formats), napari and
everything else open as a hyperstack.

Axes TCYX: one channel per component (raw, slow, fast, or those chosen), the rows
``start`` up to (not including) ``stop``, with the run's pixel size (PhysicalSizeX/Y,
micrometres), frame interval (TimeIncrement, seconds), each plane's time (Plane DeltaT,
seconds from the run's first frame) and the channel names. Plane times are written only
where the run's timestamps are acquisition times (the file's ``timestamp_origin``
attribute says "acquisition"), never the moments a replay played its frames; a file
without the attribute has no plane times. One OME image holds one pixel
type: raw alone keeps its own; any mix is float32 (raw counts up to 2**24 are exact).
Written frame by frame (never the whole run in memory); BigTIFF past 2 GiB."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .run_file import IMAGE_NAMES, acquisition_times, image_names, open_run, read_scale

BIGTIFF_BYTES = 2**31


class ExportError(ValueError):
    """An export that cannot be made as asked (names what is wrong)."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    shape: tuple[int, int, int, int]
    """(T, C, Y, X)."""
    channels: tuple[str, ...]
    rows: range
    dtype: np.dtype
    pixel_size_um: tuple[float, float] | None
    frame_interval_s: float | None
    plane_times: bool = False
    """True when the planes carry their acquisition times (OME Plane DeltaT)."""


def parse_channels(text: str | None) -> tuple[str, ...] | None:
    """"raw,slow" -> ("raw", "slow"); None or "" -> None (every channel the file has)."""
    if not text:
        return None
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in IMAGE_NAMES]
    if bad or not names:
        raise ExportError(f"--channels {text!r}: unknown channel(s) {', '.join(bad) or '(none)'}; "
                          f"choose from {', '.join(IMAGE_NAMES)}")
    if len(set(names)) != len(names):
        raise ExportError(f"--channels {text!r}: a channel appears twice")
    return names


def export_ome_tiff(src: str | os.PathLike, out: str | os.PathLike, start: int = 0, stop: int | None = None,
                    channels: tuple[str, ...] | None = None, overwrite: bool = False) -> ExportReport:
    """Write rows ``start .. stop - 1`` of ``channels`` of the run file ``src`` to ``out``."""
    import tifffile

    out = Path(out)
    if not out.name.lower().endswith((".ome.tif", ".ome.tiff")):
        raise ExportError(f"--out {out}: an OME-TIFF name ends in .ome.tif (e.g. {out.with_suffix('')}.ome.tif)")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists: give --overwrite to replace it, or choose another --out")
    if Path(src).resolve() == out.resolve():
        raise ExportError(f"--out {out} is the run file itself")
    with open_run(src) as f:
        held = image_names(f)
        names = channels or tuple(held)
        missing = [n for n in names if n not in held]
        if missing:
            raise ExportError(f"{src} has no {', '.join(missing)} (it holds {', '.join(held)})")
        total = min(len(f[n]) for n in [*names, "frames/index"])
        if not 0 <= start < max(total, 1) or total == 0:
            raise ExportError(f"--start {start} is outside the run: it has {total} frame(s), 0..{total - 1}")
        end = total if stop is None else min(stop, total)
        if end <= start:
            raise ExportError(f"--stop {stop} must be after --start {start}")
        rows = range(start, end)
        dtypes = {np.dtype(f[n].dtype) for n in names}
        dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
        h, w = f["slow"].shape[1:]
        shape = (len(rows), len(names), int(h), int(w))
        scale = read_scale(f)
        times = f["frames/timestamp"][:total]
        t0 = float(times[0])
        frame_index = f["frames/index"][start:end]
        metadata: dict = {"axes": "TCYX", "Channel": {"Name": [_channel_label(n, scale.channel_name) for n in names]}}
        if scale.pixel_size_um:
            metadata.update(PhysicalSizeY=scale.pixel_size_um[0], PhysicalSizeYUnit="µm",
                            PhysicalSizeX=scale.pixel_size_um[1], PhysicalSizeXUnit="µm")
        if scale.frame_interval_s:
            metadata.update(TimeIncrement=scale.frame_interval_s, TimeIncrementUnit="s")
        plane_times = acquisition_times(f) and bool(np.all(np.isfinite(times[start:end])))
        if plane_times:
            metadata["Plane"] = {"DeltaT": [float(times[r] - t0) for r in rows for _ in names],
                                 "DeltaTUnit": ["s"] * (len(rows) * len(names))}
        metadata["Description"] = (f"lagsplit run {Path(src).name}: rows {start}..{end - 1}, acquisition frames "
                                   f"{int(frame_index[0])}..{int(frame_index[-1])}")

        def planes():
            for r in rows:
                for n in names:
                    yield np.asarray(f[n][r], dtype=dtype)

        out.parent.mkdir(parents=True, exist_ok=True)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        tmp = out.with_name(out.name + ".part")
        try:
            tifffile.imwrite(tmp, planes(), shape=shape, dtype=dtype, ome=True, metadata=metadata,
                             bigtiff=nbytes >= BIGTIFF_BYTES, photometric="minisblack")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return ExportReport(out, shape, names, rows, dtype, scale.pixel_size_um, scale.frame_interval_s, plane_times)


def _channel_label(name: str, source_channel: str | None) -> str:
    return f"{name} ({source_channel})" if source_channel else name
