"""The quality benchmark's parts (detector, metrics, baselines, report) and
`lagsplit bench quality --quick` end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lagsplit.adapters.synthetic import make_scene, render_spots
from lagsplit.bench.baselines import MOG2, ExponentialAverage, IncrementalPCABackground, RobustPCA, RunningMedian
from lagsplit.bench.levers import DEFAULT, Lever, LeverScore, LeversRun, load_levers
from lagsplit.bench.report import END, START, levers_markdown, write_levers, write_section
from lagsplit.bench.spots import Candidates, best_f1, spot_f1
from lagsplit.cli import app
from lagsplit.config import ConfigError, load_config
from lagsplit.metrics import frame_errors, recovery_frames, slowness

ROOT = Path(__file__).resolve().parent.parent


def _spot_movie(n_frames=6, size=40, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.array([(y, x) for y in (8, 20, 32) for x in (10, 28)], float)  # 6 well-separated sites
    truth = [grid + rng.uniform(-2, 2, grid.shape) for _ in range(n_frames)]
    fast = np.stack([render_spots(p, 50.0, (size, size)) for p in truth]).astype(np.float32)
    return fast, truth


def test_f1_is_one_on_the_noise_free_spots_and_zero_when_they_are_missed():
    fast, truth = _spot_movie()
    assert spot_f1(fast, truth).f1 == pytest.approx(1.0)
    moved = [p + 3.5 for p in truth]  # every detection 5 px away: nothing matches within 2 px
    assert spot_f1(fast, moved).f1 < 0.2


def test_f1_counts_false_positives_and_misses():
    fast, truth = _spot_movie(seed=1)
    half = [p[:3] for p in truth]  # truth has 3 spots, the image 6: precision 1/2 at best
    s = spot_f1(fast, half)
    assert s.recall == pytest.approx(1.0) and s.precision == pytest.approx(0.5, abs=0.05)
    assert s.f1 == pytest.approx(2 / 3, abs=0.03)


def _brute_force_best_f1(cands, truth, radius=2.0):
    """F1 at every distinct response as threshold, a fresh maximum matching at each."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree

    n_true = sum(len(t) for t in truth)
    best = 0.0
    for lev in np.unique(np.concatenate(cands.responses)):
        tp = n_det = 0
        for t_pos, c_pos, c_resp in zip(truth, cands.positions, cands.responses):
            keep = c_resp >= lev
            n_det += int(keep.sum())
            if keep.any():
                d = cKDTree(t_pos).sparse_distance_matrix(cKDTree(c_pos[keep]), radius, output_type="coo_matrix")
                g = csr_matrix((np.ones(d.nnz), (d.row, d.col)), shape=(len(t_pos), int(keep.sum())))
                tp += int((maximum_bipartite_matching(g, perm_type="column") >= 0).sum())
        p, r = tp / n_det, tp / n_true
        best = max(best, 2 * p * r / (p + r) if p + r else 0.0)
    return best


def test_best_f1_finds_the_best_threshold_exactly():
    """The sweep admits candidates strongest first and grows one maximum matching: it must
    equal a fresh matching at every threshold, crowded spots (shared candidates) included."""
    rng = np.random.default_rng(3)
    truth, pos, resp = [], [], []
    for _ in range(12):
        t = rng.uniform(5, 35, (rng.integers(3, 9), 2))
        near = t[rng.integers(0, len(t), 10)] + rng.normal(0, 1.2, (10, 2))  # some in reach of two spots
        c = np.vstack([near, rng.uniform(5, 35, (rng.integers(0, 8), 2))])
        truth.append(t)
        pos.append(c.astype(np.float32))
        resp.append(rng.choice(np.arange(1, 30), len(c)).astype(np.float32))  # ties included
    cands = Candidates(pos, resp)
    assert best_f1(cands, truth, (40, 40), margin=0).f1 == pytest.approx(_brute_force_best_f1(cands, truth))
    # The strongest candidate is in reach of both spots, the weaker only of the first: a
    # greedy pairing gives the first spot to the strong one and the weak one nothing.
    two = [np.array([[10.0, 10.0], [10.0, 13.0]])]
    crowded = Candidates([np.array([[10.0, 11.5], [10.0, 8.5]], np.float32)], [np.array([9.0, 5.0], np.float32)])
    assert best_f1(crowded, two, (40, 40), margin=0).f1 == pytest.approx(1.0)


def test_recovery_counts_frames_until_the_error_is_back_within_ten_percent():
    errs = np.r_[np.full(30, 0.2), [2.0, 1.5, 0.5, 0.219, 0.21, 0.2, 0.2, 0.2, 0.2, 0.2]]
    assert recovery_frames(errs, 30) == 3
    assert recovery_frames(np.r_[np.full(30, 0.2), np.full(10, 0.3)], 30) is None


def test_frame_errors_and_slowness():
    truth = np.zeros((3, 4, 4))
    truth[:, 0, 0] = 4.0
    est = truth + np.arange(3)[:, None, None]
    assert np.allclose(frame_errors(est, truth), np.arange(3) / truth.std())
    raw = np.random.default_rng(0).normal(size=(10, 8, 8))
    assert slowness(np.zeros_like(raw), raw) == 0.0
    assert slowness(raw, raw) == pytest.approx(1.0)


def test_online_baselines_are_causal():
    """A baseline's estimate for frame t must not change when later frames change."""
    s = make_scene("brownian", frames=24, size=32, seed=0)
    other = s.movie.copy()
    other[12:] = other[12:][::-1]
    for m1, m2 in [(RunningMedian(8), RunningMedian(8)), (RunningMedian(8, 1.0), RunningMedian(8, 1.0)),
                   (ExponentialAverage(0.1), ExponentialAverage(0.1)), (MOG2(20), MOG2(20)),
                   (IncrementalPCABackground(2, 4), IncrementalPCABackground(2, 4))]:
        a, b = m1.run(s.movie), m2.run(other)
        assert a.shape == s.movie.shape
        assert np.allclose(a[:12], b[:12]), m1.family
        assert not np.allclose(a[12:], b[12:]), m1.family


def test_baselines_recover_a_static_background():
    s = make_scene("brownian", frames=40, size=32, seed=0)
    raw_err = np.sqrt(np.mean((s.movie[20:] - s.slow[20:]) ** 2))
    for m in (RunningMedian(16, 1.0), MOG2(50), IncrementalPCABackground(1, 5)):
        err = np.sqrt(np.mean((m.run(s.movie)[20:] - s.slow[20:]) ** 2))
        assert err < 0.8 * raw_err, m.family
    low = RobustPCA(iterations=15).run(s.movie)
    assert np.sqrt(np.mean((low[20:] - s.slow[20:]) ** 2)) < 0.6 * raw_err


def test_report_rewrites_only_its_own_section(tmp_path):
    p = tmp_path / "BENCHMARKS.md"
    p.write_text(f"# Benchmarks\n\n## Speed\nfast\n\n{START}\nold\n{END}\n\n## Other\nkept\n")
    write_section(p, f"{START}\nnew table\n{END}\n")
    text = p.read_text()
    assert "new table" in text and "old" not in text
    assert "## Speed\nfast" in text and "## Other\nkept" in text
    q = tmp_path / "fresh.md"
    write_section(q, f"{START}\nx\n{END}\n")
    assert q.read_text().startswith("# Benchmarks") and START in q.read_text()


def test_bench_quality_quick_writes_the_table_and_a_figure(tmp_path):
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["bench", "quality", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = (out / "BENCHMARKS.md").read_text()
    assert START in report and END in report
    rows = [line for line in report.splitlines() if line.startswith("| filaments |")]
    methods = {r.split("|")[2].strip() for r in rows}
    assert {"lagsplit", "running median", "running median + blur", "exponential average", "OpenCV MOG2",
            "incremental PCA", "robust PCA (offline) *"} <= methods
    lag = next(r for r in rows if r.split("|")[2].strip() == "lagsplit")
    slow, fast, f1 = (float(lag.split("|")[i].strip().strip("*")) for i in (4, 5, 6))
    assert 0 < slow < 5 and 0 < fast < 5 and 0 <= f1 <= 1
    assert "step(s)/frame" in lag
    png = out / "quality_filaments.png"
    assert png.exists() and png.stat().st_size > 1000


def test_bench_quality_refuses_an_unknown_scene(tmp_path):
    res = CliRunner().invoke(app, ["bench", "quality", "--quick", "--out", str(tmp_path), "--scenes", "nope"])
    assert res.exit_code == 2 and "unknown scene" in res.output


def test_bench_overrides_go_through_the_config_parser_and_are_checked_before_anything_runs(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "quality", "--quick", "--out", str(tmp_path), "--set", "train"])
    assert res.exit_code == 2 and "expected section.field=value" in res.output
    res = runner.invoke(app, ["bench", "quality", "--quick", "--out", str(tmp_path), "--set", "model.nope=1"])
    assert res.exit_code == 2 and "model.nope: unknown setting" in res.output
    assert "scene filaments" not in res.output  # refused before the first scene started
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_shipped_levers_parse_and_every_lever_is_a_setting_that_exists():
    from lagsplit.adapters.scenes import BENCH_SCENES

    levers = load_levers(ROOT / "configs" / "levers.toml")
    assert len(levers) >= 5 and len({lv.name for lv in levers}) == len(levers)
    for lever in levers:
        cfg = load_config(overrides=list(lever.sets), env={})  # every override is a valid setting
        assert cfg != load_config(env={}), f"lever {lever.name!r} changes nothing"
        assert lever.description and set(lever.scenes) <= set(BENCH_SCENES)


@pytest.mark.parametrize(("body", "message"), [
    ('[[lever]]\nname = "x"\ndescription = "d"\nset = ["model.nope=1"]\nscenes = ["drift"]', "model.nope: unknown setting"),
    ('[[lever]]\nname = "x"\ndescription = "d"\nset = ["train.lr=-1"]\nscenes = ["drift"]', "train.lr: Input should be greater than 0"),
    ('[[lever]]\nname = "x"\ndescription = "d"\nset = ["model.settle=48"]\nscenes = ["mars"]', "unknown scene(s) mars"),
    ('[[lever]]\nname = "x"\ndescription = "d"\nset = ["model.settle=48"]', "no scenes"),
    ('scenes = ["drift"]\n[[lever]]\nname = "x"\nset = ["model.settle=48"]', "description is missing"),
    ('scenes = ["drift"]\n[[lever]]\nname = "x"\ndescription = "d"\nset = []', "set: expected a non-empty list"),
    ('scenes = ["drift"]\n[[lever]]\nname = "x"\ndescription = "d"\nset = ["model.settle=2"]\n'
     '[[lever]]\nname = "x"\ndescription = "d"\nset = ["model.settle=4"]', "the name is taken"),
])
def test_a_bad_lever_is_refused_with_its_name_and_what_is_wrong(tmp_path, body, message):
    f = tmp_path / "levers.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_levers(f)
    assert message in str(err.value) and "lever 'x'" in str(err.value)


def _levers_run(default: dict[str, float], lever: dict[str, float]) -> LeversRun:
    lv = Lever("wide", "a wider U-Net", ("model.base_channels=32",), tuple(lever))
    scores = {DEFAULT: {k: LeverScore(v, 2.0) for k, v in default.items()},
              "wide": {k: LeverScore(v, 4.0) for k, v in lever.items()}}
    return LeversRun([lv], list(default), scores, 300, 128, 1, 100, "1 step(s)/frame", 60.0)


def test_levers_table_is_written_from_the_run_numbers(tmp_path):
    text = levers_markdown(_levers_run({"filaments": 0.150, "drift": 0.200}, {"filaments": 0.175, "drift": 0.125}))
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in text.splitlines()
            if r.startswith("| ") and not r.startswith("| lever")}
    assert rows[DEFAULT][1:4] == ["0.150", "0.200", "2.0"]
    assert rows["wide"] == ["`model.base_channels=32`", "0.175 (+0.025)", "0.125 (-0.075)", "4.0",
                            "better: drift; worse: filaments"]
    assert "frames 100-299 of the 300-frame 128x128 px scenes (seed 1)" in text
    assert "- **wide**: a wider U-Net" in text
    other = levers_markdown(_levers_run({"filaments": 0.321, "drift": 0.200}, {"filaments": 0.300, "drift": 0.200}))
    assert "0.321" in other and "0.175" not in other and "better: filaments; same: drift" in other
    p = tmp_path / "BENCHMARKS.md"
    p.write_text(f"# Benchmarks\n\n{START}\nquality kept\n{END}\n\n<!-- levers:start -->\nold\n<!-- levers:end -->\n")
    write_levers(p, text)
    assert "quality kept" in p.read_text() and "old" not in p.read_text() and "0.175 (+0.025)" in p.read_text()


def test_bench_quality_levers_runs_each_lever_beside_the_default(tmp_path):
    levers = tmp_path / "levers.toml"
    levers.write_text('scenes = ["filaments"]\n[[lever]]\nname = "no network"\ndescription = "no training"\n'
                      'set = ["train.mode=off"]\n[[lever]]\nname = "elsewhere"\ndescription = "another scene"\n'
                      'set = ["model.settle=48"]\nscenes = ["step"]\n')
    report = tmp_path / "B.md"
    res = CliRunner().invoke(app, ["bench", "quality", "--levers", "--levers-file", str(levers), "--quick",
                                   "--frames", "30", "--size", "32", "--scenes", "filaments", "--report", str(report)])
    assert res.exit_code == 0, res.output
    text = report.read_text()
    assert "<!-- levers:start -->" in text and START not in text
    row = {r.split("|")[1].strip(): r.split("|") for r in text.splitlines() if r.startswith("| ")}
    default, off = float(row[DEFAULT][3]), float(row["no network"][3].split()[0])
    assert 0 < default < 5 and 0 < off < 5
    assert f"({off - default:+.3f})" in row["no network"][3]
    assert "Not run (none of the chosen scenes): elsewhere" in text


@pytest.mark.slow
def test_real_recordings_load_from_their_packages(tmp_path):
    from lagsplit.bench.recordings import LOADERS, RecordingMissing, recordings_markdown, run_recording

    shapes = {"2D_timelapse": (30, 511, 511), "openpiv_test5": (11, 1024, 1024)}
    for name, loader in LOADERS.items():
        try:
            rec = loader()
        except RecordingMissing as exc:
            pytest.skip(str(exc))
        if name in shapes:
            assert rec.movie.shape == shapes[name]
        assert rec.movie.ndim == 3 and len(rec.movie) >= 11
    res = run_recording(LOADERS["openpiv_test5"](), tmp_path)
    assert res.figure is not None and res.figure.exists()
    assert "openpiv_test5" in recordings_markdown([res])
