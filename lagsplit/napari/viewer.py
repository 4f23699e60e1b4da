"""``lagsplit view FILE [--follow]`` and ``--view`` of replay / watch / attach: a napari
viewer on a run file (needs ``pip install 'lagsplit[napari]'``).

The viewer shows raw beside the slow (green) + fast (magenta) overlay (napari's grid),
the frame on screen named in the text overlay. ``--follow`` adds the "Follow a lagsplit
run" dock widget, which appends frames as the run flushes them. ``--view`` runs the
engine on a thread of its own and the viewer on the main thread (Qt's), following the
run's output file."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lagsplit.run_file import Rows, open_run, read_rows, read_scale

from .reader import run_layers

DOCK_NAME = "Follow a lagsplit run"


class NapariMissing(RuntimeError):
    """napari (or a Qt binding) is not installed."""


def require_napari() -> None:
    """NapariMissing, saying what to install, unless napari and a Qt binding import."""
    try:
        import napari  # noqa: F401
        import qtpy.QtWidgets  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or qtpy's "no Qt bindings"
        raise NapariMissing(f"the viewer needs napari and Qt: pip install 'lagsplit[napari]' ({exc})") from None


def open_viewer(path: str | os.PathLike, follow: bool = False, keep: int | None = None, show: bool = True,
                grid: bool = True):
    """A napari viewer on ``path``: the file's layers read lazily, or (``follow``) the dock
    widget following it. Returns (viewer, widget or None)."""
    import napari

    from .widget import FollowWidget

    viewer = napari.Viewer(title=f"lagsplit: {Path(path).name}", show=show)
    widget = None
    if follow:
        widget = FollowWidget(viewer, keep=keep)
        viewer.window.add_dock_widget(widget, name=DOCK_NAME, area="right")
        widget.follow(path)
    else:
        from .widget import show_scale_bar

        f = open_run(path)
        for data, kwargs, kind in run_layers(f):
            if kind == "image":
                viewer.add_image(data, **kwargs)
        _label_frames(viewer, read_rows(f))
        if read_scale(f).pixel_size_um:
            show_scale_bar(viewer)
    viewer.grid.enabled = grid
    viewer.grid.stride = -2  # from the top of the layer list: fast over slow in one cell, raw in the next
    return viewer, widget


def _label_frames(viewer, rows: Rows) -> None:
    """Name the frame on screen in the text overlay (static file)."""
    from .widget import text_overlay

    overlay = text_overlay(viewer)

    def show(_event=None) -> None:
        overlay.text = rows.label(int(viewer.dims.current_step[0])) if viewer.dims.ndim >= 3 else ""

    overlay.position = "top_left"
    overlay.visible = True
    viewer.dims.events.current_step.connect(show)
    show()


def wait_for_rows(widget, rows: int = 1, timeout_s: float = 30.0, quiet_s: float = 0.0) -> bool:
    """Process Qt events until the followed layers hold ``rows`` rows and no new row came
    for ``quiet_s`` seconds (a screenshot of a finished or paused run); False on timeout."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        QApplication.processEvents()
        live = widget.live
        if live is not None and live.rows >= rows and time.monotonic() - live.last_new_rows >= quiet_s:
            return True
        time.sleep(0.02)
    return False


def view(path: str | os.PathLike, follow: bool = False, keep: int | None = None,
         screenshot: str | os.PathLike | None = None, grid: bool = True) -> None:
    """Open the viewer and run Qt's event loop until the window is closed; with
    ``screenshot``, save the window as PNG once the layers are shown, and close."""
    import napari

    viewer, widget = open_viewer(path, follow=follow, keep=keep, grid=grid)
    if screenshot is None:
        with _interrupt_closes(viewer):
            napari.run()
        _finish_workers()
        return
    try:
        viewer.window.resize(1280, 760)
        if widget is not None:
            wait_for_rows(widget, rows=1, quiet_s=1.0)
        _settle()
        viewer.reset_view()
        _settle(0.2)
        viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    finally:
        if widget is not None:
            widget.stop()
        _close(viewer)


def _when_ended(thread: threading.Thread, widget):
    """Once the run's thread has ended, read the last rows and stop following: the file is
    then closed by everyone, and the layers stay on screen."""
    from qtpy.QtCore import QTimer

    from .widget import POLL_S

    timer = QTimer()

    def check() -> None:
        if thread.is_alive():
            return
        timer.stop()

        def finish() -> None:
            widget.stop(wait_s=1.0)
            widget.labels["status"].setText("the run has ended")

        QTimer.singleShot(int(3 * POLL_S * 1000), finish)

    timer.timeout.connect(check)
    timer.start(250)
    return timer


def _finish_workers(wait_ms: int = 3000) -> None:
    """After the window closed: let the follow worker end (it closes the file)."""
    from napari.qt.threading import WorkerBase

    WorkerBase.await_workers(msecs=wait_ms)


@contextmanager
def _interrupt_closes(viewer, also: Callable[[], None] | None = None) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) closes the window (and calls ``also``), instead of an exception
    inside a Qt slot. A timer runs Python a few times a second so the handler gets its turn."""
    from qtpy.QtCore import QTimer

    def handler(*_: object) -> None:
        if also is not None:
            also()
        QTimer.singleShot(0, lambda: _close(viewer))  # from Qt's loop, not from inside a handler

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = QTimer()
    timer.timeout.connect(lambda: None)
    timer.start(200)
    try:
        yield
    finally:
        timer.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)


def _close(viewer) -> None:
    """Close the window once (napari.run() returns when it is closed)."""
    if getattr(viewer, "_lagsplit_closed", False):
        return
    viewer._lagsplit_closed = True
    try:
        viewer.close()
    except RuntimeError:  # Qt already deleted the window (closed by the user)
        pass


def _settle(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def run_beside_viewer(path: str | os.PathLike, run: Callable[[], object], stop: Callable[[], None],
                      keep: int | None = None):
    """Run ``run()`` on a thread while a viewer on the main thread follows ``path``. The
    window may be closed at any time: the run goes on to its end (Ctrl-C calls ``stop``).
    Returns what ``run`` returned; an exception it raised is raised here."""
    import napari

    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="lagsplit-run", daemon=True)
    thread.start()
    viewer, widget = open_viewer(path, follow=True, keep=keep)
    ended = _when_ended(thread, widget)  # noqa: F841 - the timer lives as long as the viewer
    try:
        with _interrupt_closes(viewer, also=stop):
            napari.run()
    finally:
        _finish_workers()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        stop()
        thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")
