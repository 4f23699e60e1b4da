"""Ctrl-C at any moment of a run command, start-up included: the command says what it did,
leaves with 130, and leaves no half output (no file, no checkpoint, no output folder)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import lagsplit.app
from lagsplit.cli import STOPPED_AT_START, app
from tests.support import FAST_CLI

LINUX_MAPS = pytest.mark.skipif(not Path("/proc/self/maps").exists(),
                                reason="watches the libraries the process has loaded (/proc/PID/maps)")


def _stack(tmp_path: Path) -> Path:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.random.default_rng(0).poisson(50, (60, 32, 32)).astype(np.uint16))
    return path


def _lagsplit(*args: str, cwd: Path) -> subprocess.Popen:
    """``lagsplit ARGS`` in a process of its own, Ctrl-C handled as at a terminal (a shell that
    started the tests in the background may have left SIGINT ignored)."""
    return subprocess.Popen([sys.executable, "-m", "lagsplit", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _loads_torch(proc: subprocess.Popen) -> bool:
    """True once the process has mapped libtorch: it is importing torch, which the run commands
    do only in their start-up, seconds before the first frame."""
    try:
        return "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@LINUX_MAPS
def test_ctrl_c_while_the_run_starts_up_says_nothing_was_written_and_leaves_nothing(tmp_path):
    stack = _stack(tmp_path)
    out = tmp_path / "out" / "run.h5"
    proc = _lagsplit("replay", str(stack), "--out", str(out), *FAST_CLI, cwd=tmp_path)
    _interrupt_start_up(proc)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["stack.tif"]  # no file, checkpoint or folder


def _interrupt_start_up(proc: subprocess.Popen) -> None:
    """SIGINT to ``proc`` once it imports torch (its start-up, seconds before a first frame);
    it must exit 130 with the "nothing written" line last and no traceback."""
    try:
        deadline = time.monotonic() + 120
        while not _loads_torch(proc):
            assert proc.poll() is None, f"lagsplit ended before its start-up was interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "lagsplit never started importing torch"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGINT)
    finally:
        stdout, stderr = _finish(proc)
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == STOPPED_AT_START and "Traceback" not in stderr, stderr


def test_ctrl_c_after_the_run_was_built_releases_it_and_removes_its_output_folder(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    out = tmp_path / "out" / "run.h5"  # the HDF5 sink makes the folder when it is built

    def interrupted(run, console=None):
        assert out.parent.is_dir()
        raise KeyboardInterrupt

    monkeypatch.setattr(lagsplit.app, "execute", interrupted)
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(out), *FAST_CLI])
    assert res.exit_code == 130, res.output
    assert res.output.strip().splitlines()[-1] == STOPPED_AT_START
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["stack.tif"]
    # the sink's writer thread was closed with it: the autouse fixture fails a test that leaks one


def test_ctrl_c_once_the_run_waits_for_its_first_frame_stops_it_and_says_nothing_was_written(tmp_path):
    out = tmp_path / "out" / "run.h5"
    # a sender that never comes: the run is up (its Ctrl-C handler in place) and has no frame
    proc = _lagsplit("attach", "tcp://127.0.0.1:*", "--out", str(out), *FAST_CLI, cwd=tmp_path)
    try:
        seen = ""
        for line in proc.stderr:
            seen += line
            if "listening:" in line:
                break
        else:
            pytest.fail(f"the run never started listening: {seen}")
        os.kill(proc.pid, signal.SIGINT)
    finally:
        stdout, rest = _finish(proc)
    stderr = seen + rest
    assert proc.returncode == 130, (stdout, stderr)
    assert "stopped by SIGINT before the first frame; nothing written" in stderr, stderr
    assert "stopped by user" in stderr  # the final status line: the run stopped cleanly
    assert list(tmp_path.iterdir()) == []


@LINUX_MAPS
def test_ctrl_c_while_the_demo_starts_up_says_nothing_was_written_and_leaves_nothing(tmp_path):
    proc = _lagsplit("demo", "--set", "source.frames=12", "--set", "source.size=32", *FAST_CLI, cwd=tmp_path)
    _interrupt_start_up(proc)
    assert not list(tmp_path.iterdir())  # no out/ folder, file or figure


def test_ctrl_c_while_the_command_line_itself_loads_says_nothing_was_written(monkeypatch, capsys):
    """The console script imports typer and rich under its own guard (lagsplit/entry.py)."""
    import importlib.abc
    import sys

    from lagsplit import entry

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "lagsplit.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "lagsplit.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    with pytest.raises(SystemExit) as stop:
        entry.main()
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip() == STOPPED_AT_START
