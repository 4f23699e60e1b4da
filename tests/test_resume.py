"""An output is never replaced by accident, and a run continues one after a crash: real
`lagsplit` processes, the HDF5 file read back."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.cli import app
from lagsplit.engine.checkpoint import checkpoint_path
from lagsplit.engine.hdf5_sink import read_counters
from tests.support import FAST_CLI, run_engine


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


# ---- resume ---------------------------------------------------------------------------------------

def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    return subprocess.Popen([sys.executable, "-m", "lagsplit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def rows_and_checkpoint(out: Path) -> int:
    """Rows a SWMR reader sees while the run writes (0 until the file and a checkpoint exist)."""
    if not checkpoint_path(out).exists():
        return 0
    try:
        with h5py.File(out, "r", swmr=True) as f:
            return f["frames/index"].shape[0]
    except (OSError, KeyError):
        return 0


def test_a_killed_replay_resumes_after_its_last_frame_from_its_checkpoint(tmp_path, noise_stack):
    movie = np.concatenate([noise_stack] * 4)  # 120 frames
    src, out = tmp_path / "s.npy", tmp_path / "run.h5"
    np.save(src, movie)
    proc = start("replay", str(src), "--out", str(out), "--fps", "40", *FAST_CLI,
                 "--set", "output.flush_every=5", "--set", "output.checkpoint_every=10")
    try:
        deadline = time.monotonic() + 60
        while rows_and_checkpoint(out) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert rows_and_checkpoint(out) >= 40, proc.stderr.read() if proc.poll() is not None else "too slow"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    saved = torch.load(checkpoint_path(out), weights_only=True)
    assert saved["version"] > 0 and saved["last_index"] >= 9
    with h5py.File(out, "r", swmr=True) as f:
        kept = f["frames/index"].shape[0]
    assert kept < len(movie)

    res = lagsplit("replay", str(src), "--out", str(out), "--resume", *FAST_CLI)
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f:  # an ordinary reader: the resumed run closed the file cleanly
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(len(movie)))  # no duplicate, no hole
        np.testing.assert_array_equal(f["raw"][:], movie)
        assert len(f["slow"]) == len(f["frames/model_version"]) == len(movie)
        versions = f["frames/model_version"][:]
        resumes = {k: f["resumes"][k][:].tolist() for k in f["resumes"]}
        counters = read_counters(f)
        assert f["gaps/first_index"].shape == (0,)
    # the resumed rows come from the checkpoint's networks, not from untrained ones
    assert versions[kept] == saved["version"] and np.all(np.diff(versions[kept:]) >= 0)
    assert resumes["row"] == [kept] and resumes["after_index"] == [kept - 1]
    assert resumes["model_version"] == [saved["version"]]
    assert counters["processed"] == len(movie) and counters["resumes"] == 1
    shown = " ".join(lagsplit("inspect", str(out), "--no-config").stdout.split())
    assert f"after frame {kept - 1} (row {kept}, model version {saved['version']})" in shown


def test_counters_after_a_resume_that_fills_every_frame_agree_with_the_gaps(tmp_path, noise_stack):
    """Ctrl-C leaves frames queued (gaps, reason "not processed"); a resume plays them: the
    file's counters no longer count them as open, and /resumes keeps what they were."""
    movie = np.concatenate([noise_stack] * 4)  # 120 frames
    src, out = tmp_path / "s.npy", tmp_path / "run.h5"
    np.save(src, movie)
    proc = start("replay", str(src), "--out", str(out), "--fps", "60", *FAST_CLI,  # a worker slower than its source
                 "--set", "train.steps_per_frame=10", "--set", "output.flush_every=5",
                 "--set", "output.checkpoint_every=5")
    try:
        deadline = time.monotonic() + 60
        while rows_and_checkpoint(out) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None and rows_and_checkpoint(out) >= 5, "the run ended before it could be stopped"
        time.sleep(0.5)  # let the queue fill
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    with h5py.File(out, "r") as f:
        kept = f["frames/index"].shape[0]
        stopped = read_counters(f)
        assert f["gaps/first_index"].shape == (1,)
    left = stopped["not_processed"]
    assert left > 0 and stopped["gaps"] == 1 and stopped["received"] == kept + left, stopped

    res = lagsplit("replay", str(src), "--out", str(out), "--resume", *FAST_CLI)
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(len(movie)))
        gaps = f["gaps/first_index"].shape[0]
        counters = read_counters(f)
        history = f["resumes/counters"]
        before = dict(zip([str(n) for n in history.attrs["names"]], history[0].tolist(), strict=True))
        after_index = f["resumes/after_index"][:].tolist()
    assert gaps == 0 and counters["gaps"] == 0 and counters["not_processed"] == 0, counters
    assert counters["received"] == counters["processed"] == len(movie) and counters["resumes"] == 1
    assert after_index == [kept - 1]
    assert {k: before[k] for k in ("not_processed", "gaps", "received")} == {
        "not_processed": left, "gaps": 1, "received": kept + left}  # what the stopped run had left


def test_a_watched_folder_resumes_dropping_the_frames_the_file_holds(tmp_path, noise_stack):
    folder, out = tmp_path / "acq", tmp_path / "w.h5"
    folder.mkdir()
    for i in range(12):
        tifffile.imwrite(folder / f"img_t{i:04}.tif", noise_stack[i])
    (folder / "END").touch()
    args = ["watch", str(folder), "--out", str(out), "--end-marker", "END", *FAST_CLI,
            "--set", "source.settle_s=0.05", "--set", "source.reorder_s=0.2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    for i in (12, 13, 15, 16):  # the acquisition went on; frame 14 never came
        tifffile.imwrite(folder / f"img_t{i:04}.tif", noise_stack[i])
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], [*range(14), 15, 16])
        np.testing.assert_array_equal(f["raw"][:], noise_stack[[*range(14), 15, 16]])
        gaps = list(zip(f["gaps/first_index"][:].tolist(), f["gaps/count"][:].tolist()))
        assert gaps == [(14, 1)]
        assert f["resumes/after_index"][:].tolist() == [11]
        counters = read_counters(f)
    assert counters["processed"] == 16 and counters["received"] == 16  # the files taken again are not counted twice


def _first_run(tmp_path: Path, noise_stack: np.ndarray) -> tuple[Path, Path]:
    src, out = tmp_path / "s.npy", tmp_path / "o.h5"
    np.save(src, noise_stack)
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), *FAST_CLI, "--set", "source.stop=12"])
    assert res.exit_code == 0, res.output
    return src, out


@pytest.mark.parametrize(("change", "named"), [
    (["--set", "model.lags=[8,4,2,1]"], "model.lags = [4, 2, 1], this run uses [8, 4, 2, 1]"),
    (["--set", "model.base_channels=8"], "model.base_channels = 4, this run uses 8"),
    (["--set", "output.components=true"], "output.components = false, this run uses true"),
    (["--set", "output.dtype=float16"], "output.dtype = 'float32', this run uses 'float16'"),
    (["SHAPE"], "it holds frames of 24 x 32 px, this run's are 24 x 30 px (shape)"),
    (["DTYPE"], "it holds frames of dtype uint16, this run's are float32 (dtype)"),
])
def test_an_incompatible_resume_is_refused_naming_the_setting_and_leaves_the_file_untouched(tmp_path, noise_stack, change, named):
    src, out = _first_run(tmp_path, noise_stack)
    ckpt = checkpoint_path(out)
    before = digest(out), digest(ckpt)
    if change == ["SHAPE"]:
        np.save(src, noise_stack[:, :, :30])
        change = []
    elif change == ["DTYPE"]:
        np.save(src, noise_stack.astype(np.float32))
        change = []
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), "--resume", *FAST_CLI, *change])
    text = " ".join(res.output.split())
    assert res.exit_code == 2, text
    assert f"cannot resume {out}: it " in text and named in text and "the file is left as it was" in text
    assert (digest(out), digest(ckpt)) == before


def test_a_live_source_of_another_shape_is_refused_when_its_first_frame_comes(tmp_path, noise_stack):
    _, out = _first_run(tmp_path, noise_stack)
    folder = tmp_path / "acq"
    folder.mkdir()
    for i in range(12, 16):
        tifffile.imwrite(folder / f"img_t{i:04}.tif", noise_stack[i, :20])
    (folder / "END").touch()
    before = digest(out), digest(checkpoint_path(out))
    res = CliRunner().invoke(app, ["watch", str(folder), "--out", str(out), "--end-marker", "END", "--resume", *FAST_CLI])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "this run's are 20 x 32 px (shape)" in text, text
    assert (digest(out), digest(checkpoint_path(out))) == before


def test_resume_and_overwrite_together_are_refused(tmp_path, noise_stack):
    src, out = _first_run(tmp_path, noise_stack)
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), "--resume", "--overwrite", *FAST_CLI])
    assert res.exit_code == 2 and "give one of them" in res.output


def test_a_replay_the_file_holds_whole_has_nothing_to_resume(tmp_path, noise_stack):
    src, out = _first_run(tmp_path, noise_stack)
    before = digest(out)
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), "--resume", "--set", "source.stop=12", *FAST_CLI])
    assert res.exit_code == 0 and "holds every frame" in res.output and "nothing to resume" in res.output
    assert digest(out) == before


def test_a_checkpoint_is_replaced_whole_or_not_at_all(tmp_path, noise_stack, small_model, fixed_train, monkeypatch):
    """A crash while a checkpoint is written leaves the previous one loadable and no stray file."""
    from lagsplit.engine import checkpoint as ck
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.trainer import OnlineTrainer

    out = tmp_path / "run.h5"
    path = checkpoint_path(out)
    run_engine(ArrayStream(noise_stack[:20]), small_model, fixed_train)
    cascade = Cascade(small_model, fixed_train.history, fixed_train.warmup_steps)
    trainer = OnlineTrainer(cascade, fixed_train)
    trainer.version = 7
    ck.save_checkpoint(path, cascade, trainer, run_id="r1", last_index=9)
    good = digest(path)

    def torn(obj, fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", torn)
    trainer.version = 8
    with pytest.raises(OSError, match="No space left"):
        ck.save_checkpoint(path, cascade, trainer, run_id="r1", last_index=19)
    monkeypatch.undo()
    assert digest(path) == good and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    other = Cascade(small_model.model_copy(update={"seed": 9}), fixed_train.history, fixed_train.warmup_steps)
    restored = ck.load_checkpoint(path, other, OnlineTrainer(other, fixed_train), run_id="r1")
    assert (restored.model_version, restored.last_index) == (7, 9)
    for a, b in zip(cascade.nets[0].parameters(), other.nets[0].parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ck.UnusableCheckpoint, match="another run"):
        ck.load_checkpoint(path, other, OnlineTrainer(other, fixed_train), run_id="r2")


@pytest.mark.parametrize("raw", [True, False])
def test_a_resumed_run_primes_its_windows_from_the_file(tmp_path, noise_stack, raw):
    """With /raw, the restored networks are in use from the first new frame; without it the
    windows fill again, and the first frames up to the longest lag are warm-up."""
    src, out = tmp_path / "s.npy", tmp_path / "o.h5"
    np.save(src, noise_stack)
    args = ["replay", str(src), "--out", str(out), *FAST_CLI, "--set", f"output.raw={str(raw).lower()}"]
    first = CliRunner().invoke(app, [*args, "--set", "source.stop=20"])
    assert first.exit_code == 0, first.output
    with h5py.File(out, "r") as f:
        assert not f["frames/warmup"][-1]  # the first run ended with its networks in use
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["frames/index"][:], np.arange(30))
        resumed = f["frames/warmup"][20:].tolist()
    if raw:
        assert resumed == [0] * 10
    else:
        assert resumed == [1] * 4 + [0] * 6  # lag 4: the ring holds no input for the first 4


def test_a_checkpoint_never_holds_half_a_training_step(tmp_path, small_model, fixed_train, monkeypatch):
    """A checkpoint taken while a training thread steps waits for the step to end, and holds
    copies of the weights: what the trainer changes after is not in it."""
    import threading

    from lagsplit.engine import checkpoint as ck
    from lagsplit.engine.cascade import Cascade
    from lagsplit.engine.trainer import OnlineTrainer

    cascade = Cascade(small_model, fixed_train.history, fixed_train.warmup_steps)
    trainer = OnlineTrainer(cascade, fixed_train)
    path = checkpoint_path(tmp_path / "run.h5")
    weight = next(cascade.nets[0].parameters())
    stepping, saved = threading.Event(), []

    def half_a_step():  # the weights change in two halves, under the lock a step holds
        with trainer.weights_lock:
            stepping.set()
            with torch.no_grad():
                weight.add_(1.0)
            time.sleep(0.3)
            trainer.version += 1

    monkeypatch.setattr(ck.torch, "save", lambda obj, fh, _save=torch.save: (saved.append(obj), _save(obj, fh)))
    t = threading.Thread(target=half_a_step)
    t.start()
    stepping.wait()
    ck.save_checkpoint(path, cascade, trainer, run_id="r1", last_index=3)
    t.join()
    state, at_save = saved[0], weight.detach().clone()
    assert state["version"] == 1  # the whole step, not its first half
    with torch.no_grad():
        weight.add_(5.0)  # the trainer goes on: the checkpoint does not change with it
    assert torch.equal(next(iter(state["train_nets"][0].values())), at_save)


def test_a_network_setting_the_file_does_not_record_counts_as_its_default_in_every_check(tmp_path, noise_stack):
    """A file (or weights file) from before a setting existed had its default: one rule for
    resuming a run and for loading weights (engine/cascade.network_mismatch)."""
    import json

    import torch

    from lagsplit.engine.cascade import Cascade, network_mismatch
    from lagsplit.engine.config import ModelConfig

    src, out = _first_run(tmp_path, noise_stack)
    with h5py.File(out, "r+") as f:  # as written before model.clip existed
        config = json.loads(f.attrs["config"])
        del config["model"]["clip"]
        f.attrs["config"] = json.dumps(config)
    res = CliRunner().invoke(app, ["replay", str(src), "--out", str(out), "--resume", *FAST_CLI,
                                   "--set", "model.clip=3.0"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "model.clip = 2.0, this run uses 3.0" in text, text

    model = ModelConfig(lags=(4, 2, 1), base_channels=4, levels=1, clip=3.0)
    state = Cascade(model, 16, 5).state()
    saved = dict(state["model"])
    del saved["clip"]
    assert network_mismatch(saved, model) == ("clip", 2.0, 3.0)
    assert network_mismatch(saved, model.model_copy(update={"clip": 2.0})) is None
    weights = tmp_path / "w.pt"
    torch.save({**state, "model": saved}, weights)
    with pytest.raises(ValueError, match=r"model\.clip = 2\.0, this run uses 3\.0"):
        Cascade(model, 16, 5).load(str(weights))
