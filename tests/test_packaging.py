"""One distribution, one namespace: a wheel of the project installs only ``lagsplit.*``
(engine/ and adapters/ as lagsplit.engine and lagsplit.adapters), editable or not."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_LEFTOVERS = shutil.ignore_patterns(".git", ".venv", "build", "dist", "out", "*.egg-info", "__pycache__",
                                         ".pytest_cache", ".ruff_cache")

# Imports every module that pulls in the others, then the generic names that must not exist.
PROBE = """
import importlib.util, json, sys
repo = sys.argv[1]
assert not any(p and p.rstrip("/") == repo for p in sys.path), sys.path
import lagsplit.engine.engine, lagsplit.adapters.sources, lagsplit.cli
found = {name: importlib.util.find_spec(name) is not None for name in ("engine", "adapters", "tools")}
print(json.dumps({"engine_file": lagsplit.engine.engine.__file__,
                  "adapters_file": lagsplit.adapters.sources.__file__, "generic": found}))
"""


def _python(*args: str, cwd: Path) -> dict:
    """Run PROBE in a fresh interpreter: isolated (-I: no PYTHONPATH, no script folder on
    sys.path), started outside the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    res = subprocess.run([sys.executable, "-I", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the working tree (the build leaves nothing in the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=BUILD_LEFTOVERS)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (whl,) = (tmp / "dist").glob("lagsplit-*.whl")
    return whl


def test_the_wheel_holds_only_the_lagsplit_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"lagsplit"}, sorted(top)
    for folder, package in (("engine", "lagsplit/engine"), ("adapters", "lagsplit/adapters"),
                            ("lagsplit", "lagsplit"), ("lagsplit/bench", "lagsplit/bench"),
                            ("lagsplit/napari", "lagsplit/napari")):
        expected = {f"{package}/{p.name}" for p in (ROOT / folder).glob("*.py")}
        assert expected and expected <= set(names), sorted(expected - set(names))
    # the napari plugin: its manifest ships in the package and napari finds it by entry point
    assert "lagsplit/napari/napari.yaml" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "[napari.manifest]\nlagsplit = lagsplit.napari:napari.yaml" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not [n for n in names if n.split("/")[0] in ("engine", "adapters", "tools")]
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["lagsplit"]


def test_the_installed_wheel_imports_as_lagsplit_and_not_as_engine(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # the unpacked wheel goes first on sys.path, ahead of the editable install's finder
    probe = f"import sys; sys.path.insert(0, {str(site)!r})\n" + PROBE
    got = _python("-c", probe, str(ROOT), cwd=tmp_path)
    assert got["engine_file"] == str(site / "lagsplit" / "engine" / "engine.py")
    assert got["adapters_file"] == str(site / "lagsplit" / "adapters" / "sources.py")
    assert got["generic"] == {"engine": False, "adapters": False, "tools": False}


def test_the_editable_install_imports_as_lagsplit_and_not_as_engine(tmp_path):
    got = _python("-c", PROBE, str(ROOT), cwd=tmp_path)
    assert got["engine_file"] == str(ROOT / "engine" / "engine.py")
    assert got["adapters_file"] == str(ROOT / "adapters" / "sources.py")
    assert got["generic"] == {"engine": False, "adapters": False, "tools": False}
