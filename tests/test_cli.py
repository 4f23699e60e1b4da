"""The command line as a user runs it: replay of each stack format, inspect, and the promised errors."""
from __future__ import annotations

import json
import subprocess
import sys
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
        (lambda d: np.save(d / "a6.npy", np.zeros((3, 4, 5, 6, 7, 2))) or d / "a6.npy", "expected a (T, H, W) stack"),
        (lambda d: np.save(d / "a4.npy", np.zeros((3, 2, 5, 6))) or d / "a4.npy", "--channel N reads it as (T, C, Y, X)"),
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
        f["acquisition/images"] = noise_stack
    res = _replay(str(src), tmp_path / "o.h5")
    assert res.exit_code == 2 and f"{src}:/NAME" in res.output and "/acquisition/images (30, 24, 32)" in res.output
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


# ---- never damage data ---------------------------------------------------------------------------

def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_an_output_that_is_the_input_is_refused_before_anything_is_opened(tmp_path, noise_stack):
    tif = tmp_path / "in.tif"
    tifffile.imwrite(tif, noise_stack)
    h5 = tmp_path / "data.h5"
    with h5py.File(h5, "w") as f:
        f["acq/movie"] = noise_stack
    (tmp_path / "alias.h5").symlink_to(h5)
    (tmp_path / "sub").mkdir()
    before = {p: _snapshot(p) for p in (tif, h5)}
    proc = subprocess.run([sys.executable, "-m", "lagsplit", "replay", str(tif), "--out", str(tif)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"--out {tif} is the input" in " ".join(proc.stderr.split()), proc.stderr
    for spec, out in ((str(tif), tif), (f"{h5}:/acq/movie", h5), (f"{h5}:/acq/movie", tmp_path / "alias.h5"),
                      (f"{tmp_path / 'alias.h5'}:/acq/movie", tmp_path / "sub" / ".." / "data.h5")):
        res = _replay(spec, out)
        assert res.exit_code == 2, res.output
        assert f"--out {out} is the input" in res.output
    assert {p: _snapshot(p) for p in (tif, h5)} == before


def test_an_output_that_is_not_hdf5_is_refused_and_left_alone(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    victim = tmp_path / "victim.tif"
    tifffile.imwrite(victim, noise_stack[:2])
    before = _snapshot(victim)
    for out in (victim, tmp_path / "result.txt"):
        res = _replay(str(src), out, "--overwrite")
        assert res.exit_code == 2 and "does not end in .h5, .hdf5 or .ome.zarr" in res.output, res.output
    assert _snapshot(victim) == before
    assert not (tmp_path / "result.txt").exists()


def test_an_existing_output_is_refused_unless_overwrite(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    out = tmp_path / "o.h5"
    assert _replay(str(src), out, "--set", "source.stop=10").exit_code == 0
    first = _snapshot(out)
    res = _replay(str(src), out)
    assert res.exit_code == 2 and f"{out} exists: give --overwrite" in res.output
    assert _snapshot(out) == first
    res = _replay(str(src), out, "--overwrite")
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        assert len(f["frames/index"]) == 30


@pytest.mark.parametrize("command", [["watch", "{dir}"], ["attach", "tcp://127.0.0.1:9"], ["run", "{config}"],
                                     ["demo"]])
def test_every_command_that_writes_refuses_an_existing_output(tmp_path, command):
    (tmp_path / "frames").mkdir()
    config = tmp_path / "c.toml"
    config.write_text('[source]\nkind = "synthetic"\nframes = 5\n')
    out = tmp_path / "keep.h5"
    out.write_bytes(b"earlier results")
    args = [a.format(dir=tmp_path / "frames", config=config) for a in command]
    res = CliRunner().invoke(app, [*args, "--out", str(out), *FAST])
    assert res.exit_code == 2, res.output
    assert "exists: give --overwrite" in res.output
    assert out.read_bytes() == b"earlier results"


def test_the_demo_regenerates_its_own_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = [*FAST, "--set", "source.frames=12", "--set", "source.size=32", "--set", "source.fps=0",
             "--set", "train.mode=fixed"]
    for _ in range(2):
        res = CliRunner().invoke(app, ["demo", *small])
        assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "out" / "demo.h5", "r") as f:
        assert len(f["frames/index"]) == 12


def test_a_failed_run_leaves_no_output_folder_it_created(tmp_path, noise_stack):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 2, 5, 6)))  # refused: channels or z?
    res = _replay(str(bad), tmp_path / "new" / "deeper" / "o.h5")
    assert res.exit_code == 2
    assert not (tmp_path / "new").exists()

    # a run that fails once running, before its first frame: the folder it made goes, one that existed stays
    from lagsplit.adapters.synthetic import ArrayStream
    from lagsplit.app import build_run, execute
    from lagsplit.config import load_config

    class Broken(ArrayStream):
        def __iter__(self):
            raise OSError("camera unplugged")
            yield

    (tmp_path / "existing").mkdir()
    for folder, stays in ((tmp_path / "made" / "here", tmp_path / "made"), (tmp_path / "existing", None)):
        cfg = load_config(None, [f"output.path={str(folder / 'o.h5')!r}", "monitor.mode='off'"], env={})
        run = build_run(cfg, adapter=Broken(noise_stack))
        status = execute(run)
        assert status.state.value == "failed" and "camera unplugged" in status.error
        assert not folder.exists() if stays else folder.exists()
        if stays:
            assert not stays.exists()


def test_a_start_past_the_end_is_an_error_naming_the_length(tmp_path, noise_stack):
    src = tmp_path / "s.npy"
    np.save(src, noise_stack)
    out = tmp_path / "new" / "o.h5"
    res = _replay(str(src), out, "--set", "source.start=30")
    assert res.exit_code == 2
    assert "source.start = 30 is beyond the stack's end: it has 30 frame(s)" in res.output
    assert not (tmp_path / "new").exists()


# ---- stacks with channels or z -------------------------------------------------------------------

def test_replay_of_a_two_channel_ome_tiff_plays_the_chosen_channel(tmp_path, noise_stack):
    tcyx = np.stack([noise_stack, noise_stack[::-1] + 1000], axis=1)  # channel 1: reversed, offset
    src = tmp_path / "two.ome.tif"
    tifffile.imwrite(src, tcyx, ome=True, metadata={"axes": "TCYX"})
    out = tmp_path / "o.h5"
    res = _replay(str(src), out)
    assert res.exit_code == 2 and "axes TCYX" in res.output and "--channel N, 0..1" in res.output
    assert not out.exists()
    res = _replay(str(src), out, "--channel", "1")
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["raw"][:], noise_stack[::-1] + 1000)
        assert "channel 1" in f.attrs["source"]


def test_run_takes_plane_options_for_a_replay_source_only(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[source]\nkind = "replay"\npath = "x.tif"\n')
    res = CliRunner().invoke(app, ["run", str(config), "--z", "2", "--axes", "tzyx", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert '"z": 2' in res.output and '"axes": "TZYX"' in res.output
    config.write_text('[source]\nkind = "synthetic"\n')
    res = CliRunner().invoke(app, ["run", str(config), "--channel", "1", "--dry-run"])
    assert res.exit_code == 2 and "need source.kind = 'replay'" in res.output


def test_publish_and_pretrain_read_the_chosen_plane_and_refuse_what_they_must(tmp_path, noise_stack):
    src = tmp_path / "a.npy"
    np.save(src, np.stack([noise_stack, noise_stack], axis=1))  # (T, 2, H, W)
    res = CliRunner().invoke(app, ["publish", str(src), "tcp://127.0.0.1:*", "--dry-run"])
    assert res.exit_code == 2 and "--channel N reads it as (T, C, Y, X)" in res.output
    res = CliRunner().invoke(app, ["publish", str(src), "tcp://127.0.0.1:*", "--z", "1", "--dry-run"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert (plan["frames"], plan["shape"], plan["stack"]) == (30, [24, 32], f"{src} (z 1)")
    res = CliRunner().invoke(app, ["publish", str(src), "tcp://127.0.0.1:*", "--z", "1", "--start", "30", "--dry-run"])
    assert res.exit_code == 2 and "--start = 30 is beyond the stack's end: it has 30 frame(s)" in res.output
    before = _snapshot(src)
    res = CliRunner().invoke(app, ["pretrain", str(src), "--out", str(src), "--channel", "0"])
    assert res.exit_code == 2 and "is the input" in res.output
    assert _snapshot(src) == before


def test_the_demo_says_whether_it_kept_up_with_its_rate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = [*FAST, "--set", "source.frames=12", "--set", "source.size=32", "--set", "source.fps=20"]
    res = CliRunner().invoke(app, ["demo", *small])
    assert res.exit_code == 0, res.output
    assert "32x32 at 20 frames/s:" in res.output and "latency p50" in res.output and "dropped" in res.output


def test_the_demo_names_its_cpu_and_judges_keeping_up_by_the_latency_bound(tmp_path, monkeypatch):
    import dataclasses

    import numpy as np

    from lagsplit.demo import keeping_up_line
    from lagsplit.engine.nets import cpu_bf16_native

    monkeypatch.chdir(tmp_path)
    small = [*FAST, "--set", "source.frames=12", "--set", "source.size=32", "--set", "source.fps=20"]
    res = CliRunner().invoke(app, ["demo", *small])
    assert res.exit_code == 0, res.output
    assert ("bfloat16 native" if cpu_bf16_native() else "bfloat16 not native") in res.output
    assert "networks in " in res.output
    status = _demo_status()
    fast = np.full(10, 20.0)
    assert "kept up" in keeping_up_line(32, 20, fast, status)
    late = dataclasses.replace(status, shed_train=4)
    assert "fell behind[/] (latency p99 over the 200 ms bound)" in keeping_up_line(32, 20, fast * 20, late)
    assert "skipped training steps on 4 frames to hold 200 ms" in keeping_up_line(32, 20, fast, late)


def _demo_status():
    from lagsplit.engine.status import RunState, Status

    return Status(state=RunState.FINISHED, reason=None, source="demo", device="cpu", lags=(4, 2, 1), elapsed_s=1.0,
                  received=10, processed=10, rejected=0, dropped=0, gaps=0, nonfinite=0, changes=0, queue_depth=0,
                  queue_capacity=8, in_rate_hz=20.0, out_rate_hz=20.0, latency_p50_ms=20.0, latency_p99_ms=20.0,
                  train_steps=10, train_rate_hz=1.0, train_skipped=0, loss=(0.1, 0.1, 0.1), model_version=10,
                  warmup=False, last_index=9, error=None, live=True, max_latency_ms=200.0)
