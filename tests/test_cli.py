"""The command line as a user runs it: replay of each stack format, inspect, and the promised errors."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from lagsplit.cli import app

FAST = ["--set", "model.lags=[4,2,1]", "--set", "model.base_channels=4", "--set", "model.levels=1",
        "--set", "train.mode=fixed", "--set", "train.warmup_steps=3", "--set", "train.crop=16",
        "--set", "train.batch=2", "--set", "monitor.mode=off"]


def _replay(spec: str, out: Path, *extra: str):
    return CliRunner().invoke(app, ["replay", spec, "--out", str(out), *FAST, *extra])


@pytest.mark.parametrize("fmt", ["tif", "ome.tif", "npy", "h5"])
def test_replay_reads_each_stack_format_and_writes_one_row_per_frame(tmp_path, noise_stack, fmt):
    src = tmp_path / f"stack.{fmt}"
    spec = str(src)
    if fmt == "tif":
        tifffile.imwrite(src, noise_stack)
    elif fmt == "ome.tif":
        tifffile.imwrite(src, noise_stack, ome=True, metadata={"axes": "TYX"})
    elif fmt == "npy":
        np.save(src, noise_stack)
    else:
        with h5py.File(src, "w") as f:
            f.create_dataset("acq/movie", data=noise_stack)
        spec = f"{src}:/acq/movie"
    out = tmp_path / "out.h5"
    res = _replay(spec, out)
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["raw"][:], noise_stack)
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(len(noise_stack)))
        np.testing.assert_allclose(f["slow"][:] + f["fast"][:], noise_stack.astype(np.float32), atol=1e-3)
        assert str(src) in f.attrs["source"]


def test_replay_start_stop_and_fps_are_honoured(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    out = tmp_path / "o.h5"
    res = _replay(str(src), out, "--fps", "200", "--set", "source.start=5", "--set", "source.stop=15")
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(5, 15))
        ts = f["frames/timestamp"][:]
        np.testing.assert_allclose(np.diff(ts), 1 / 200, atol=1e-6)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.tif", "does not exist"),
        (lambda d: _write(d / "junk.tif", b"this is not a tiff"), "cannot read stack"),
        (lambda d: _write(d / "notes.txt", b"hello"), "unsupported format '.txt'"),
        (lambda d: d, "is a folder"),
        (lambda d: np.save(d / "rgb.npy", np.zeros((3, 4, 5, 6, 2))) or d / "rgb.npy", "expected a (T, H, W) stack"),
    ],
)
def test_unreadable_input_gives_a_clear_error_and_writes_nothing(tmp_path, make, message):
    spec = make(tmp_path)
    out = tmp_path / "o.h5"
    res = _replay(str(spec), out)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_hdf5_stack_without_dataset_lists_what_is_there(tmp_path, noise_stack):
    src = tmp_path / "s.h5"
    with h5py.File(src, "w") as f:
        f["movie"] = noise_stack
    res = _replay(str(src), tmp_path / "o.h5")
    assert res.exit_code == 2 and f"{src}:/NAME" in res.output and "movie" in res.output
    res = _replay(f"{src}:/nope", tmp_path / "o.h5")
    assert res.exit_code == 2 and "no dataset /nope" in res.output


def test_unwritable_output_fails_before_the_run(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _replay(str(src), blocker / "out.h5")
    assert res.exit_code == 2 and "cannot create output folder" in res.output


def test_inspect_prints_what_the_run_wrote(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    out = tmp_path / "o.h5"
    assert _replay(str(src), out, "--set", "output.components=true").exit_code == 0
    res = CliRunner().invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    for expected in ("30 (acquisition index 0 .. 29)", "24 x 32 px", "input <u2", "4, 2, 1", "gaps none",
                     "warm-up frames", "model versions 0 ..", "final loss lag 4:", "processed 30",
                     "rejected 0", "dropped 0", "components/lag_4", '"mode": "fixed"'):
        assert expected in text, expected


def test_inspect_refuses_a_file_that_is_not_ours(tmp_path):
    bad = tmp_path / "x.h5"
    with h5py.File(bad, "w") as f:
        f["a"] = 1
    res = CliRunner().invoke(app, ["inspect", str(bad)])
    assert res.exit_code == 2 and "not a lagsplit output file" in res.output
