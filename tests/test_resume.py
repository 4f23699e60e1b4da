"""An output is never replaced by accident, and a run continues one after a crash: real
`lagsplit` processes, the HDF5 file read back."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import FAST_CLI


def lagsplit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A real `lagsplit` process (the fast tiny engine), its output captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "lagsplit", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_existing_output_is_refused_naming_overwrite_and_resume(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    out = tmp_path / "o.h5"
    first = lagsplit("replay", str(src), "--out", str(out), *FAST_CLI, "--set", "source.stop=6")
    assert first.returncode == 0, first.stderr
    before = digest(out)
    again = lagsplit("replay", str(src), "--out", str(out), *FAST_CLI)
    text = " ".join(again.stderr.split())
    assert again.returncode == 2, text
    assert f"{out} exists: give --overwrite to replace it" in text
    assert "--resume to continue it after its last frame" in text
    assert digest(out) == before
