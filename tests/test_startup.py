"""What a command imports on its way to the first frame, and the start-up benchmark.

Start-up time is measured by ``lagsplit bench speed`` (lagsplit/startup.py), never by a timed
test; these tests fail when a heavy module comes back onto the start-up path."""
from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np

from lagsplit.startup import run_startup

# imported by nothing a run needs: the compiler torch.optim pulls in (torch._dynamo, 0.9-1.7 s
# on a 2-core CPU), the viewer, the OME-Zarr writer (an .h5 run), the batch's cluster, the
# benchmarks' baselines
HEAVY = ("torch._dynamo", "torch._inductor", "napari", "zarr", "ome_zarr_models", "dask", "distributed", "scipy",
         "cv2", "sklearn", "matplotlib")
_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")


def _imported(args: list[str], cwd) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules a ``python -X importtime`` process imported, and the process."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    names = {m.group(1) for line in done.stderr.splitlines() if (m := _IMPORT.match(line))}
    assert names, done.stderr[-2000:]  # the format was read: an empty set would prove nothing
    return names, done


def _heavy(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


def test_a_replay_imports_nothing_heavy_and_records_its_start_up(tmp_path):
    stack = tmp_path / "s.npy"
    np.save(stack, np.random.default_rng(0).poisson(300, (12, 32, 32)).astype(np.uint16))
    out = tmp_path / "x.h5"
    names, done = _imported(["-m", "lagsplit", "replay", str(stack), "--out", str(out),
                             "--set", "monitor.mode=off", "--set", "train.warmup_steps=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch" in names and "h5py" in names  # what a run does need
    assert _heavy(names) == []
    with h5py.File(out, "r") as f:
        assert len(f["frames/index"]) == 12
        assert 0 < float(f.attrs["startup_s"]) < 300  # seconds from the command's start to its first frame


def test_the_command_line_alone_imports_no_torch(tmp_path):
    names, done = _imported(["-c", "import lagsplit.cli"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "typer" in names
    assert not {"torch", "h5py", "numpy", "pydantic"} & names
    assert _heavy(names) == []


def test_the_start_up_benchmark_writes_its_section_and_the_readme_line(tmp_path):
    bench, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- startup-summary:start -->\nold\n<!-- startup-summary:end -->\n\nafter\n")
    text = run_startup("lagsplit bench speed --startup-only", path=str(bench), readme=str(readme), size=32, frames=10,
                       runs=1)
    assert "## Start-up" in text and "(10 frames written)" in text
    first = float(re.search(r"\*\*first frame processed, from the command's start\*\* .*\| \*\*([\d.]+)\*\* \|",
                            text).group(1))
    assert first > 0
    assert "<!-- startup:start -->" in bench.read_text()
    summary = readme.read_text()
    assert "old" not in summary and f"processes its first frame {first:.2f} s after the command starts" in summary
    assert summary.endswith("after\n")
