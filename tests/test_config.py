"""Configuration: precedence, one clear message per bad field, the generated default file."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lagsplit.cli import app
from lagsplit.config import ConfigError, load_config, render_default_toml
from lagsplit.demo import DEMO_DEFAULTS
from lagsplit.engine.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def test_precedence_defaults_file_environment_command_line(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nmode = "fixed"\nsteps_per_frame = 3\nlr = 0.01\n[model]\nlags = [16, 2]\n')
    cfg = load_config(f, ["train.steps_per_frame=5"], env={"LAGSPLIT_TRAIN__LR": "0.002", "LAGSPLIT_TRAIN__STEPS_PER_FRAME": "4"})
    assert cfg.train.mode == "fixed"  # file
    assert cfg.train.lr == 0.002  # environment beats file
    assert cfg.train.steps_per_frame == 5  # command line beats environment
    assert cfg.model.lags == (16, 2)
    assert cfg.train.batch == TrainConfig().batch  # default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.mode=fast", "train.mode: Input should be 'slack', 'fixed' or 'off' (got 'fast')"),
        ("model.lags=[1, 8]", "model.lags: lags must be distinct and longest first, got [1, 8]"),
        ("model.lags=[]", "model.lags: at least one lag is required"),
        ("engine.overflow=maybe", "engine.overflow: Input should be 'block' or 'drop' (got 'maybe')"),
        ("train.batch=0", "train.batch: Input should be greater than or equal to 1 (got 0)"),
        ("train.stepz=1", "train.stepz: unknown setting"),
        ("source.kind=camera", "source.kind: must be one of synthetic, replay"),
        ("source.kind=replay", "source.path: required setting is missing"),
        ("output.compression=zip", "output.compression: Input should be"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override], env={})
    assert message in str(err.value)


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="expected section.field=value"):
        load_config(overrides=["train.mode"], env={})
    with pytest.raises(ConfigError, match="must name section.field"):
        load_config(overrides=["mode=fixed"], env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.toml", env={})


def test_invalid_toml_is_reported_with_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train\nmode=1")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config(f, env={})


def test_default_toml_is_generated_from_the_models_and_loads_to_the_defaults():
    text = (ROOT / "configs" / "default.toml").read_text()
    assert text == render_default_toml(), "run python tools/gen_default_config.py"
    cfg = load_config(ROOT / "configs" / "default.toml", env={})
    assert cfg == load_config(env={})


def test_every_shipped_config_is_valid_and_demo_toml_matches_the_embedded_demo():
    for path in (ROOT / "configs").glob("*.toml"):
        if not path.name.startswith("levers"):  # levers files: lagsplit bench quality --levers reads them
            load_config(path, env={})
    demo_file = tomllib.loads((ROOT / "configs" / "demo.toml").read_text())
    assert load_config(base=demo_file, env={}) == load_config(base=DEMO_DEFAULTS, env={})


def test_dry_run_prints_the_effective_config_and_bad_config_fails_before_anything_starts(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(ROOT / "configs" / "replay.toml"), "--set", "train.steps_per_frame=7",
                              "--set", f"output.path={tmp_path / 'x.h5'}", "--dry-run"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["train"]["steps_per_frame"] == 7 and shown["source"]["kind"] == "replay"
    res = runner.invoke(app, ["run", str(ROOT / "configs" / "replay.toml"), "--set", "train.mode=turbo",
                              "--set", f"output.path={tmp_path / 'y.h5'}"])
    assert res.exit_code == 2
    assert "train.mode" in res.output and "'slack', 'fixed' or 'off'" in res.output
    assert not (tmp_path / "y.h5").exists()


def test_live_toml_attaches_to_a_sender_and_records_what_it_could_not_keep_as_gaps(tmp_path):
    """configs/live.toml is a live config: it connects to a ZeroMQ sender (here a real one on a
    random loopback port), and every frame sent is in the file or in a recorded gap."""
    import threading

    import h5py
    import numpy as np
    import zmq

    from lagsplit.adapters.publish import Publisher, PublishStopped
    from lagsplit.engine.hdf5_sink import read_counters
    from tests.support import FAST_CLI

    cfg = load_config(ROOT / "configs" / "live.toml", env={})
    assert (cfg.source.kind, cfg.engine.overflow, cfg.train.mode) == ("zmq", "drop", "slack")
    movie = np.random.default_rng(0).poisson(50, (20, 32, 32)).astype(np.uint16)
    ctx = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", series="live", context=ctx)

    def sender():
        try:
            pub.start(movie.shape[1:], movie.dtype, timeout_s=20)
            for i, img in enumerate(movie):
                pub.image(i, img)
            pub.end()
        except PublishStopped:
            pass  # the run failed; the assertions below say why
        finally:
            pub.close()

    t = threading.Thread(target=sender)
    t.start()
    out = tmp_path / "live.h5"
    try:
        res = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "live.toml"), "--set",
                                       f"source.endpoint={pub.endpoint}", "--set", f"output.path={out}", *FAST_CLI])
    finally:
        pub.stop()
        t.join()
        ctx.term()
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        kept = f["frames/index"][:].tolist()
        gaps = [i for a, n in zip(f["gaps/first_index"][:], f["gaps/count"][:]) for i in range(a, a + n)]
        c = read_counters(f)
    assert sorted(kept + gaps) == list(range(20)) and c["received"] == 20
    assert c["processed"] == len(kept) and c["dropped"] == len(gaps)
