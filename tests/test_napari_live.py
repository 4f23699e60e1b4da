"""The live view under Qt with no display: a real ``lagsplit replay --fps`` in another process
writes while the "Follow a lagsplit run" widget follows the file, and the layers grow to the
file's full frame count, equal to the file. Opt-in (``pytest -m gui``, needs
``pip install -e '.[gui]'``): Qt runs offscreen; napari's ViewerModel holds the layers (no
OpenGL canvas is needed)."""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from .run_files import FRAMES, write_ome_stack
from .support import FAST_CLI

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")
pytest.importorskip("napari")
from lagsplit.napari.widget import text_overlay  # noqa: E402 - needs Qt, checked above

pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(autouse=True)
def _pool_threads_end():
    """Qt keeps a pool thread that ran a worker idle for half a minute: end them with the
    test, so that a later test in this process (the soak test counts the process's threads
    and open files) sees none of them come and go."""
    yield
    from qtpy.QtCore import QThreadPool

    assert QThreadPool.globalInstance().waitForDone(10_000)


def _replay(stack, out, fps: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lagsplit", "replay", str(stack), "--channel", "0", "--fps", str(fps),
           "--out", str(out), *FAST_CLI, "--set", "output.flush_every=1"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _widget(qtbot, keep=None):
    from napari.components import ViewerModel

    from lagsplit.napari.widget import FollowWidget

    viewer = ViewerModel()
    widget = FollowWidget(viewer, keep=keep)
    qtbot.addWidget(widget)
    return viewer, widget


def test_the_widget_follows_a_run_another_process_writes_to_its_last_frame(qtbot, tmp_path):
    stack = write_ome_stack(tmp_path / "stack.ome.tif", frames=FRAMES)
    out = tmp_path / "live.h5"
    proc = _replay(stack, out, fps=10)
    viewer, widget = _widget(qtbot)
    seen: list[tuple[int, int, bool]] = []  # (rows held, row on screen, writer still running)
    live = widget.follow(out)
    worker = live.worker
    try:
        live.on_update = lambda upd, _show=live.on_update: (
            _show(upd), seen.append((live.rows, live.current_row() or 0, proc.poll() is None)))
        qtbot.waitUntil(lambda: live.rows >= 3, timeout=60_000)
        assert proc.poll() is None, "the run must still be writing while the viewer follows"
        viewer.dims.set_current_step(0, 1)  # the user looks at an early frame ...
        assert not live.following
        held = live.rows
        qtbot.waitUntil(lambda: live.rows > held + 2, timeout=90_000)
        assert viewer.dims.current_step[0] == 1  # ... and stays on it while frames arrive
        viewer.dims.set_current_step(0, live.rows - 1)  # back to the end: follows again
        assert live.following
        assert proc.wait(timeout=120) == 0, proc.stdout.read()
        qtbot.waitUntil(lambda: live.rows == FRAMES, timeout=90_000)
        with h5py.File(out, "r") as f:
            assert len(f["frames/index"]) == FRAMES
            for name in ("raw", "slow", "fast"):
                layer = next(la for la in viewer.layers if la.name.split()[0] == name)
                np.testing.assert_array_equal(layer.data, f[name][:])
            np.testing.assert_allclose(layer.scale, (0.05, 0.13, 0.13))
        qtbot.waitUntil(lambda: widget.labels["processed"].text() == str(FRAMES), timeout=10_000)
        assert viewer.dims.current_step[0] == FRAMES - 1
        assert text_overlay(viewer).text.startswith(f"frame {FRAMES - 1} · t {(FRAMES - 1) * 0.05:.2f} s")
        assert widget.labels["latency"].text().endswith(" ms")
    finally:
        widget.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not worker.is_running  # stop() ended the reading thread
    growing = sorted({rows for rows, _, running in seen if running and rows})
    assert len(growing) >= 3, f"frames must arrive while the run writes, seen {seen}"
    assert all(row == rows - 1 for rows, row, _ in seen[-3:])  # the newest frame is on screen


def test_the_layers_hold_only_the_last_keep_frames(qtbot, tmp_path):
    from .run_files import write_run

    out = write_run(tmp_path, gaps=False)
    viewer, widget = _widget(qtbot, keep=8)
    live = widget.follow(out)
    worker = live.worker
    try:
        qtbot.waitUntil(lambda: live.rows == 8 and live.last is not None, timeout=90_000)
        with h5py.File(out, "r") as f:
            n = len(f["frames/index"])
            layer = next(la for la in viewer.layers if la.name == "slow")
            np.testing.assert_array_equal(layer.data, f["slow"][n - 8:])
        assert widget.labels["frames"].text() == f"{n} (last 8 shown)"
        assert text_overlay(viewer).text.startswith(f"frame {n - 1} ")
    finally:
        widget.stop()
    assert not worker.is_running
