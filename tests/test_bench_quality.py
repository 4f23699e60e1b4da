"""The quality benchmark's parts (detector, metrics, baselines, report) and
`lagsplit bench quality --quick` end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lagsplit.adapters.scenes import make_scene, render_spots
from lagsplit.bench.baselines import MOG2, ExponentialAverage, IncrementalPCABackground, RobustPCA, RunningMedian
from lagsplit.bench.levers import DEFAULT, Lever, LeverScore, LeversRun, load_levers
from lagsplit.bench.quality import (
    LAGSPLIT,
    FamilyResult,
    QualityRun,
    SceneResult,
    Score,
    baseline_scores,
    central_crop,
)
from lagsplit.bench.report import END, START, levers_markdown, quality_markdown, write_levers, write_section
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


def test_running_median_is_numpys_median_of_the_frames_so_far():
    movie = np.random.default_rng(0).poisson(20, (9, 6, 7)).astype(np.float32)
    movie += np.random.default_rng(1).random(movie.shape, np.float32)
    for window in (4, 5):  # even and odd windows, filling up and full
        got = RunningMedian(window).run(movie)
        want = [np.median(movie[max(0, t + 1 - window): t + 1], axis=0) for t in range(len(movie))]
        assert np.array_equal(got, np.stack(want)), window


def test_central_crop_keeps_the_spots_inside_in_its_own_coordinates():
    s = make_scene("brownian", frames=3, size=48, seed=0, n_spots=60)
    c = central_crop(s, 20)
    assert c.movie.shape == c.slow.shape == c.fast.shape == (3, 20, 20)
    assert np.array_equal(c.movie, s.movie[:, 14:34, 14:34])
    for full, crop in zip(s.spots, c.spots):
        inside = full[((full >= 14) & (full < 34)).all(1)]
        assert np.allclose(crop, inside - 14) and 0 < len(crop) < len(full)


def test_robust_pca_runs_on_the_central_128_px_of_larger_frames():
    scores = baseline_scores("brownian", frames=12, size=144, seed=1, quick=True, rpca=True, scaled=True)
    rpca = [s for s in scores if not s.online]
    assert [s.crop for s in rpca] == [128] and all(s.crop is None for s in scores if s.online)
    assert 0 < rpca[0].slow < 5 and 0 <= rpca[0].f1 <= 1
    small = baseline_scores("brownian", frames=12, size=48, seed=1, quick=True, rpca=True)
    assert [s.crop for s in small if not s.online] == [None]  # 128 px and below: the whole frame


def _sized_run() -> QualityRun:
    def fam(name, slow, f1, online=True):
        sc = Score(name, "s", slow, 1.0, f1, online=online)
        return FamilyResult(name, sc, sc, online, 2.0)

    scenes = []
    for name, (lag, med, crop_lag, crop_rpca) in {"filaments": (0.211, 0.254, 0.233, 0.187),
                                                  "drift": (0.318, 0.301, 0.297, 0.402)}.items():
        crop = [Score(LAGSPLIT, "s", crop_lag, 1.0, 0.9, crop=128),
                Score("robust PCA (offline)", "lambda 1/sqrt(max(T, HW)), 25 iterations", crop_rpca, 1.0, 0.91,
                      seconds=31.0, online=False, crop=128)]
        scenes.append(SceneResult(name, "notes", 300, 512, 100, [fam(LAGSPLIT, lag, 0.95), fam("running median", med, 0.94)],
                                  knobs={"n_spots": 480, "n_filaments": 12}, crop=crop, ceiling_f1=0.96))
    return QualityRun(scenes, 1, "1 step(s)/frame", 600.0, command="lagsplit bench quality --size 512",
                      section="quality512", work_size=128, binning=4)


def test_sized_section_is_written_from_the_run_numbers(tmp_path):
    text = quality_markdown(_sized_run())
    assert text.startswith("<!-- quality512:start -->\n## Decomposition quality at 512x512 px")
    assert text.rstrip().endswith("<!-- quality512:end -->") and START not in text
    assert "binned 4x4 to at most model.work_size = 128 px" in text
    assert "filaments (n_spots=480, n_filaments=12), drift (n_spots=480, n_filaments=12)" in text
    assert "| filaments | 0.211 | 0.254 (running median) |" in text  # wins
    assert "| drift | 0.318 | 0.301 (running median) |" in text and "**loses** slow" in text
    assert "| filaments | 0.233 | 0.187 | 0.900 | 0.910 | 31.0 |" in text
    assert "| drift | 0.297 | 0.402 | 0.900 | 0.910 | 31.0 |" in text
    assert "Mean slow NRMSE on the crop: lagsplit 0.265, robust PCA (offline) 0.294." in text
    assert "offline, non-causal" not in text  # no offline row in the full-frame table
    p = tmp_path / "BENCHMARKS.md"
    table = f"{START}\nthe 128 px table\n{END}"
    p.write_text(f"# Benchmarks\n\n{table}\n")
    write_section(p, text, "quality512")
    write_section(p, text.replace("0.211", "0.199"), "quality512")  # rewritten in place, not appended
    out = p.read_text()
    assert table in out and out.count("<!-- quality512:start -->") == 1 and "0.199" in out and "0.211" not in out


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


def test_bench_quality_at_another_size_writes_its_own_section_and_keeps_the_128_table(tmp_path):
    report, out = tmp_path / "BENCHMARKS.md", tmp_path / "bench"
    kept = f"# Benchmarks\n\n{START}\nthe 128 px table\n{END}\n\n<!-- speed:start -->\nspeed\n<!-- speed:end -->\n"
    report.write_text(kept)
    res = CliRunner().invoke(app, ["bench", "quality", "--quick", "--size", "48", "--frames", "30", "--out", str(out),
                                   "--report", str(report)])
    assert res.exit_code == 0, res.output
    text = report.read_text()
    assert text.startswith(kept.rstrip())  # the 128 px table and the speed section as they were
    section = text.split("<!-- quality48:start -->", 1)[1].split("<!-- quality48:end -->", 1)[0]
    assert "## Decomposition quality at 48x48 px" in section and "--size 48" in section
    assert "filaments (n_filaments=2, n_spots=3)" in section  # the 128 px crowding at 48 px
    lag = next(r for r in section.splitlines() if r.startswith("| filaments | lagsplit |"))
    slow, f1 = (float(lag.split("|")[i].strip().strip("*")) for i in (4, 6))
    assert 0 < slow < 5 and 0 <= f1 <= 1
    assert (out / "quality48_filaments.png").exists() and not (out / "quality_filaments.png").exists()


def test_bench_quality_refuses_a_size_too_small_for_the_scenes(tmp_path):
    res = CliRunner().invoke(app, ["bench", "quality", "--quick", "--size", "16", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--size 16" in res.output and "at least 32 px" in res.output


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
    from lagsplit.adapters.scenes import SCENES

    levers = load_levers(ROOT / "configs" / "levers.toml")
    assert len(levers) >= 5 and len({lv.name for lv in levers}) == len(levers)
    for lever in levers:
        cfg = load_config(overrides=list(lever.sets), env={})  # every override is a valid setting
        assert cfg != load_config(env={}), f"lever {lever.name!r} changes nothing"
        assert lever.description and set(lever.scenes) <= set(SCENES)


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
