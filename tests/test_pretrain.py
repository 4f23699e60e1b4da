"""`lagsplit pretrain STACK --out W` and `--init W` on a run: weights trained on a recorded
stack carry into a live run, which is then warm from its first frames."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lagsplit.cli import app

SMALL = ["--set", "model.lags=[4,2,1]", "--set", "model.base_channels=4", "--set", "model.levels=1",
         "--set", "train.crop=16", "--set", "train.batch=2", "--set", "train.history=16",
         "--set", "monitor.mode=off"]


def _pretrained(tmp_path, noise_stack, *args: str):
    """The noise stack saved as stack.npy and weights pretrained on it (``args``: pretrain's
    options): (stack, weights)."""
    stack = tmp_path / "stack.npy"
    np.save(stack, noise_stack)
    weights = tmp_path / "w.pt"
    res = CliRunner().invoke(app, ["pretrain", str(stack), "--out", str(weights), *args, *SMALL])
    assert res.exit_code == 0, res.output
    return stack, weights


def test_pretrain_writes_weights_a_replay_starts_from(tmp_path, noise_stack):
    stack, weights = _pretrained(tmp_path, noise_stack, "--steps", "2", "--passes", "2")
    state = torch.load(weights, weights_only=True)
    assert state["lags"] == [4, 2, 1]
    # two passes over 30 frames, two steps per frame once the ring holds a pair (from frame 4)
    assert state["stage_steps"][0] == 2 * 2 * (30 - 4)

    out = tmp_path / "run.h5"
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(out), "--init", str(weights), *SMALL,
                                   "--set", "train.mode=fixed", "--set", "train.warmup_steps=50"])
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        warm = f["frames/warmup"][:].astype(bool)
        cfg = f.attrs.get("config")
    # pretrained past warm-up: the networks take over as soon as the ring holds the longest lag
    assert warm[:4].all() and not warm[4:].any()
    assert str(weights) in str(cfg)


def test_init_refuses_weights_of_another_shape(tmp_path, noise_stack):
    stack, weights = _pretrained(tmp_path, noise_stack, "--steps", "1")
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(tmp_path / "x.h5"), "--init", str(weights),
                                   *SMALL, "--set", "model.lags=[2,1]"])
    assert res.exit_code == 2
    assert "model.lags = [4, 2, 1], this run uses [2, 1]" in res.output


def test_init_loads_the_weights_a_frozen_run_uses(tmp_path, noise_stack):
    """With training off, a run from --init splits as the pretrained networks do, not as
    networks of the same seed that were never trained."""
    stack, weights = _pretrained(tmp_path, noise_stack, "--steps", "4")
    frozen = [*SMALL, "--set", "train.mode=off", "--set", "train.warmup_steps=0", "--set", "model.gate_decay=0"]
    slow = {}
    for name, init in (("init", ["--init", str(weights)]), ("random", [])):
        out = tmp_path / f"{name}.h5"
        res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(out), *init, *frozen])
        assert res.exit_code == 0, res.output
        with h5py.File(out, "r") as f:
            assert not f["frames/warmup"][4:].any()  # the networks make slow from the longest lag on
            slow[name] = f["slow"][4:]
    # frames the networks split: pretrained weights give another slow than untrained ones
    assert np.abs(slow["init"] - slow["random"]).max() > 1e-3


def _truncated(path, good):
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make", [
    pytest.param(_truncated, id="truncated"),
    pytest.param(lambda path, good: path.write_bytes(b"i am not a weights file\n"), id="not-torch"),
    pytest.param(lambda path, good: torch.save({"weights": torch.zeros(3)}, path), id="torch-without-keys"),
    pytest.param(lambda path, good: torch.save(torch.zeros(3), path), id="torch-tensor"),
])
def test_a_corrupt_init_file_is_a_clear_error_naming_it(tmp_path, noise_stack, make):
    stack, good = _pretrained(tmp_path, noise_stack, "--steps", "1")
    bad = tmp_path / "bad.pt"
    make(bad, good)
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(tmp_path / "x.h5"), "--init", str(bad), *SMALL])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "error:" in res.output and str(bad) in res.output and "lagsplit pretrain" in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.h5").exists()


def test_pretrain_reports_a_missing_stack(tmp_path):
    res = CliRunner().invoke(app, ["pretrain", str(tmp_path / "none.tif"), "--out", str(tmp_path / "w.pt"), *SMALL])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_the_live_commands_take_init_too(tmp_path):
    """watch and attach (a live acquisition, where a warm start matters most) accept --init."""
    weights = tmp_path / "w.pt"
    for args in (["watch", str(tmp_path)], ["attach", "tcp://127.0.0.1:5999"]):
        res = CliRunner().invoke(app, [*args, "--init", str(weights), "--dry-run"])
        assert res.exit_code == 0, res.output
        assert f'"init": "{weights.as_posix()}"' in res.output, res.output
