"""A command whose optional packages are missing says so before it starts, naming the extra
that installs them. A package is made missing by blocking its import (``sys.modules[name] =
None``), in this process or in a ``lagsplit`` process of its own."""
from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lagsplit.cli import app
from lagsplit.extras import ExtraMissing, installed, require


def test_require_names_each_missing_distribution_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert not installed("cv2") and installed("numpy") and not installed("no_such_module.sub")
    with pytest.raises(ExtraMissing) as err:
        require("lagsplit bench quality", "bench", {"numpy": "numpy", "cv2": "opencv-python-headless",
                                                    "sklearn": "scikit-learn"})
    assert str(err.value) == ("lagsplit bench quality needs opencv-python-headless, scikit-learn, not installed: "
                              "pip install 'lagsplit[bench]'")
    require("lagsplit bench quality", "bench", {"numpy": "numpy"})  # all there: nothing to say


def test_bench_quality_without_scikit_learn_stops_before_it_starts(tmp_path):
    out = tmp_path / "bench"
    code = ("import sys; sys.modules['sklearn'] = None; from lagsplit.cli import main; "
            f"sys.argv = ['lagsplit', 'bench', 'quality', '--quick', '--out', {str(out)!r}]; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "lagsplit bench quality needs scikit-learn, not installed: pip install 'lagsplit[bench]'" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()  # nothing ran
    assert list(tmp_path.iterdir()) == []


def test_bench_quality_with_recordings_names_their_packages_and_the_way_around(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openpiv", None)
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["bench", "quality", "--frames", "20", "--scenes", "filaments", "--out", str(out),
                                   "--report", str(tmp_path / "B.md")])
    assert res.exit_code == 2, res.output
    assert "openpiv" in res.output and "pip install 'lagsplit[bench]'" in res.output
    assert "--no-recordings" in res.output
    assert list(tmp_path.iterdir()) == []


def test_bench_speed_without_opencv_stops_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    res = CliRunner().invoke(app, ["bench", "speed", "--sizes", "32", "--frames", "4", "--no-write"])
    assert res.exit_code == 2, res.output
    assert "lagsplit bench speed needs opencv-python-headless, not installed: pip install 'lagsplit[bench]'" \
        in res.output
