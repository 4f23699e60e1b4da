"""`lagsplit pretrain STACK --out W` and `--init W` on a run: weights trained on a recorded
stack carry into a live run, which is then warm from its first frames."""
from __future__ import annotations

import h5py
import numpy as np
import torch
from typer.testing import CliRunner

from lagsplit.cli import app

SMALL = ["--set", "model.lags=[4,2,1]", "--set", "model.base_channels=4", "--set", "model.levels=1",
         "--set", "train.crop=16", "--set", "train.batch=2", "--set", "train.history=16",
         "--set", "monitor.mode=off"]


def test_pretrain_writes_weights_a_replay_starts_from(tmp_path, noise_stack):
    stack = tmp_path / "stack.npy"
    np.save(stack, noise_stack)
    weights = tmp_path / "w.pt"
    res = CliRunner().invoke(app, ["pretrain", str(stack), "--out", str(weights), "--steps", "2", "--passes", "2",
                                   *SMALL])
    assert res.exit_code == 0, res.output
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
    stack = tmp_path / "stack.npy"
    np.save(stack, noise_stack)
    weights = tmp_path / "w.pt"
    res = CliRunner().invoke(app, ["pretrain", str(stack), "--out", str(weights), "--steps", "1", *SMALL])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["replay", str(stack), "--out", str(tmp_path / "x.h5"), "--init", str(weights),
                                   *SMALL, "--set", "model.lags=[2,1]"])
    assert res.exit_code == 2
    assert "lags [4, 2, 1]" in res.output


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
