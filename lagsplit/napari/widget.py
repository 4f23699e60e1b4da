"""The "Follow a lagsplit run" dock widget and the live layers it drives (needs napari and Qt).

``LiveView`` owns the layers of one followed file: a napari ``thread_worker`` reads the
file (lagsplit.napari.follow), and ``apply`` runs on the main thread with what it read.
``FollowWidget`` is the dock widget around it: a file field, the number of rows to keep,
Follow / Stop, and the run's counters."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from lagsplit.run_file import contrast_limits

from .follow import FrameWindow, RunFollower, Update, poll_forever
from .reader import image_kwargs

POLL_S = 0.2
"""Seconds between two looks at the file."""
SETTLE_ROWS = 16
"""Contrast limits follow the data until the layers hold this many rows."""


def text_overlay(viewer):
    """The viewer's text overlay (``viewer.canvas.overlays["text"]`` from napari 0.9 on)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    if overlays is not None and "text" in overlays:
        return overlays["text"]
    return viewer.text_overlay


def show_scale_bar(viewer) -> None:
    """A scale bar in micrometres (for a run that recorded its pixel size)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    bar = overlays["scale_bar"] if overlays is not None and "scale_bar" in overlays else viewer.scale_bar
    bar.visible = True


class LiveView:
    """Layers raw / slow / fast of a file a run is writing, kept up to date.

    ``viewer`` is a napari viewer (or ``ViewerModel``). ``on_update`` is called on the
    main thread after each look at the file with the Update (None: file not ready yet,
    an Exception: following stopped with that error)."""

    def __init__(self, viewer, path: str | os.PathLike, keep: int | None = None, interval_s: float = POLL_S,
                 on_update: Callable[[object], None] | None = None) -> None:
        self.viewer = viewer
        self.path = Path(path)
        self.follower = RunFollower(self.path, keep)
        self.interval_s = interval_s
        self.on_update = on_update
        self.window: FrameWindow | None = None
        self.layers: dict = {}
        self.following = True
        """True while the newest frame is shown (the time slider was not moved off it)."""
        self.last: Update | None = None
        self.last_new_rows = time.monotonic()
        self.worker = None
        self._setting_step = False

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from napari.qt.threading import thread_worker

        self.worker = thread_worker(poll_forever, start_thread=False)(self.follower, self.interval_s)
        self.worker.yielded.connect(self.apply)
        self.worker.finished.connect(self.follower.close)  # a quit generator is not closed by the worker
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.worker.start()

    def stop(self, wait_s: float = 5.0) -> None:
        """Ask the worker to end (it closes the file at its next look) and wait up to
        ``wait_s`` seconds for it, processing Qt events meanwhile (0: do not wait)."""
        if self.worker is None:
            return
        worker, self.worker = self.worker, None
        self.viewer.dims.events.current_step.disconnect(self._on_step)
        worker.quit()
        deadline = time.monotonic() + wait_s
        while worker.is_running and time.monotonic() < deadline:
            from qtpy.QtWidgets import QApplication

            QApplication.processEvents()
            time.sleep(0.01)

    @property
    def rows(self) -> int:
        """Rows the layers hold."""
        return 0 if self.window is None else self.window.n

    # ---- main thread --------------------------------------------------------------------------
    def apply(self, upd: object) -> None:
        """Append what the worker read to the layers (main thread)."""
        if isinstance(upd, Update):
            self._append(upd)
        if self.on_update is not None:
            self.on_update(upd)

    def _append(self, upd: Update) -> None:
        self.last = upd
        if self.window is None:
            self.window = FrameWindow(self.follower.keep or len(upd) or 1)
        before = self.current_row()
        dropped = self.window.extend(upd)
        if len(upd):
            self.last_new_rows = time.monotonic()
        if self.window.n == 0:
            return
        w = self.window
        meta = self._metadata(upd)
        self._setting_step = True
        try:
            for name in upd.images:
                data = w.data(name)
                layer = self.layers.get(name)
                if layer is None:
                    kw = image_kwargs(name, upd.scale, contrast_limits(data, signed=name == "fast"), meta)
                    self.layers[name] = self.viewer.add_image(data, **kw)
                    if upd.scale.pixel_size_um:
                        show_scale_bar(self.viewer)
                else:
                    layer.data = data
                    layer.metadata["lagsplit"] = meta["lagsplit"]
                    if w.n <= SETTLE_ROWS:
                        layer.contrast_limits = contrast_limits(data, signed=name == "fast")
            target = w.n - 1 if self.following or before is None else min(max(0, before - dropped), w.n - 1)
            self.viewer.dims.set_current_step(0, target)
        finally:
            self._setting_step = False
        self._show_label()

    def _metadata(self, upd: Update) -> dict:
        rows = self.window.rows()  # type: ignore[union-attr]
        s = upd.scale
        return {"lagsplit": {
            "path": upd.path, "source": upd.source, "lags": upd.lags, "pixel_size_um": s.pixel_size_um,
            "frame_interval_s": s.frame_interval_s, "channel_name": s.channel_name, "first_row": rows.first,
            "frame_index": rows.index, "timestamp": rows.timestamp, "warmup": rows.warmup,
            "latency_ms": rows.latency_ms, "gaps": rows.gaps, "counters": upd.counters, "rows_in_file": upd.total,
        }}

    def current_row(self) -> int | None:
        """The window row on screen (0 = oldest held), or None before any layer exists."""
        if not self.layers or self.viewer.dims.ndim < 3:
            return None
        return int(self.viewer.dims.current_step[0])

    def _on_step(self, _event=None) -> None:
        if self._setting_step or self.window is None:
            return
        row = self.current_row()
        self.following = row is not None and row >= self.window.n - 1
        self._show_label()

    def _show_label(self) -> None:
        row = self.current_row()
        if row is None or self.window is None:
            return
        overlay = text_overlay(self.viewer)
        overlay.text = self.window.rows().label(self.window.first_row + row)
        overlay.position = "top_left"
        overlay.visible = True

    def latency_p50(self) -> float | None:
        """Median latency (ms) of the rows held."""
        if self.window is None or self.window.n == 0:
            return None
        return float(np.median(self.window.rows().latency_ms))


class FollowWidget(QWidget):
    """Dock widget "Follow a lagsplit run": pick a run file and follow it live."""

    def __init__(self, napari_viewer, path: str | os.PathLike | None = None, keep: int | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.live: LiveView | None = None
        self.path_edit = QLineEdit(str(path or ""))
        self.path_edit.setPlaceholderText("run.h5 or run.ome.zarr (a run lagsplit writes)")
        browse = QPushButton("…")
        browse.setToolTip("Choose a lagsplit .h5 file (type an .ome.zarr store's path in the box)")
        browse.clicked.connect(self._browse)
        self.keep_box = QSpinBox()
        self.keep_box.setRange(0, 1_000_000)
        self.keep_box.setSpecialValueText("auto")
        self.keep_box.setValue(keep or 0)
        self.keep_box.setToolTip("Frames the layers hold, the newest (auto: as many as fit in 512 MiB); "
                                 "older frames leave the viewer, not the file")
        self.button = QPushButton("Follow")
        self.button.clicked.connect(self._toggle)
        self.labels = {k: QLabel("-") for k in ("status", "frames", "processed", "dropped", "rejected", "latency")}
        self.labels["status"].setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("keep frames", self.keep_box)
        for key, text in (("frames", "frames"), ("processed", "processed"), ("dropped", "dropped"),
                          ("rejected", "rejected"), ("latency", "latency p50")):
            form.addRow(text, self.labels[key])
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.button)
        layout.addLayout(form)
        layout.addWidget(self.labels["status"])
        layout.addStretch(1)
        self.setMinimumWidth(300)
        self.destroyed.connect(lambda *_: self.stop(wait_s=0))  # no event processing inside Qt's teardown

    def _browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "lagsplit run file", "", "lagsplit runs (*.h5 *.hdf5)")
        if name:
            self.path_edit.setText(name)

    def _toggle(self) -> None:
        if self.live is None:
            self.follow(self.path_edit.text().strip())
        else:
            self.stop()

    def follow(self, path: str | os.PathLike) -> LiveView | None:
        """Start following ``path`` (stops a file followed before)."""
        self.stop()
        if not str(path):
            self.labels["status"].setText("give the run's .h5 file or .ome.zarr store")
            return None
        self.path_edit.setText(str(path))
        self.live = LiveView(self.viewer, path, keep=self.keep_box.value() or None, on_update=self._show)
        self.live.start()
        self.button.setText("Stop")
        self.labels["status"].setText(f"waiting for {path}")
        return self.live

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop following (the layers stay)."""
        live, self.live = self.live, None
        if live is not None:
            live.stop(wait_s)
        try:
            self.button.setText("Follow")
        except RuntimeError:  # the Qt side is already deleted
            pass

    def _show(self, upd: object) -> None:
        live = self.live
        if live is None:
            return
        if isinstance(upd, Exception):
            self.labels["status"].setText(f"stopped: {upd}")
            self.stop()
            return
        if upd is None:
            self.labels["status"].setText(f"waiting for {live.path} (not written yet)")
            return
        assert isinstance(upd, Update)
        c = upd.counters
        for key in ("processed", "dropped", "rejected"):
            self.labels[key].setText(str(c.get(key, "-")))
        p50 = live.latency_p50()
        self.labels["latency"].setText("-" if p50 is None else f"{p50:.1f} ms")
        self.labels["frames"].setText(f"{upd.total} (last {live.rows} shown)")
        quiet = time.monotonic() - live.last_new_rows
        state = "following the newest frame" if live.following else "time slider held (move it to the end to follow)"
        self.labels["status"].setText(state if quiet < 2 else f"{state}; no new frame for {quiet:.0f} s")
