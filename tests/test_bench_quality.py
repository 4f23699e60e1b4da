"""The quality benchmark's parts (detector, metrics, baselines, report) and
`lagsplit bench quality --quick` end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lagsplit.adapters.scenes import make_scene, render_spots
from lagsplit.bench.baselines import (
    MOG2,
    ExponentialAverage,
    IncrementalPCABackground,
    RobustPCA,
    RunningMedian,
    online_grid,
)
from lagsplit.bench.engine_method import bench_config, run_engine
from lagsplit.bench.levers import DEFAULT, Lever, LeverScore, LeversRun, load_levers
from lagsplit.bench.orpca import OnlineRobustPCA
from lagsplit.bench.quality import (
    LAGSPLIT,
    FamilyResult,
    QualityRun,
    SceneResult,
    Score,
    WarmupResult,
    _family_results,
    baseline_scores,
    bench_scene,
    central_crop,
    lagsplit_overrides,
)
from lagsplit.bench.report import END, START, levers_markdown, quality_markdown, write_levers, write_section
from lagsplit.bench.spots import Candidates, best_f1, spot_f1
from lagsplit.cli import app
from lagsplit.config import ConfigError, load_config
from lagsplit.metrics import frame_errors, nrmse, recovery_frames, slowness

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
                   (IncrementalPCABackground(2, 4), IncrementalPCABackground(2, 4)),
                   (OnlineRobustPCA(2), OnlineRobustPCA(2))]:
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
    assert {"lagsplit", "lagsplit, statistics only", "running median", "running median + blur", "exponential average",
            "OpenCV MOG2", "incremental PCA", "online robust PCA (OR-PCA)", "robust PCA (offline) *"} <= methods
    lag = next(r for r in rows if r.split("|")[2].strip() == "lagsplit")
    slow, slow_all, fast, f1 = (float(lag.split("|")[i].strip().strip("*")) for i in (4, 5, 6, 7))
    assert 0 < slow < 5 and 0 < slow_all < 5 and 0 < fast < 5 and 0 <= f1 <= 1
    assert "step(s)/frame" in lag
    assert "### From the first frame" in report and "### lagsplit against offline robust PCA" in report
    assert "Fast frame-mean bias" not in report  # filaments' sample does not fade
    # the learned part beside the same engine with its networks off, and beside the best statistics
    learned = report[report.index("### What the learned part adds"):]
    stats = next(r for r in rows if r.split("|")[2].strip() == "lagsplit, statistics only")
    row = next(line for line in learned.splitlines() if line.startswith("| filaments |"))
    cells = [c.strip() for c in row.split("|")]
    assert float(cells[2]) == slow and float(cells[3]) == float(stats.split("|")[4].strip().strip("*"))
    assert float(cells[5]) == min(float(cells[3]), float(cells[4].split()[0]))
    assert any(line.startswith("| mean |") for line in learned.splitlines())
    assert "lagsplit's slow NRMSE is" in learned and "the engine's with its networks off" in learned
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
    slow, f1 = (float(lag.split("|")[i].strip().strip("*")) for i in (4, 7))
    assert 0 < slow < 5 and 0 <= f1 <= 1
    assert (out / "quality48_filaments.png").exists() and not (out / "quality_filaments.png").exists()


def _table(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose header line starts with ``header``, by the
    method in their second cell (the scene in the first where the table has no method)
    and its cells, stripped."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[i + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.split("|")[1:-1]]
        key = cells[1] if "| method |" in header else cells[0]
        rows[key.rstrip(" *")] = cells
    return rows


def _num(cell: str) -> str:
    """A number cell without its bold."""
    return cell.strip("*")


def _frame_mean_bias(scene, slow: np.ndarray) -> np.ndarray:
    """|frame mean of raw - slow - that of the true fast part| / frame mean of the true slow part."""
    est = scene.movie.mean(axis=(1, 2), dtype=np.float64) - slow.mean(axis=(1, 2), dtype=np.float64)
    return np.abs(est - scene.fast.mean(axis=(1, 2), dtype=np.float64)) / scene.slow.mean(axis=(1, 2), dtype=np.float64)


QUICK_FRAMES, QUICK_SIZE, LAG_START, FIRST = 60, 48, 8, 20
"""--quick plays 60 frames of 48x48 px: the engine's first frame after its longest lag (8)
starts the all-frames score, a third of the movie the score after warm-up."""


@pytest.fixture(scope="module")
def fade_run(tmp_path_factory):
    """``lagsplit bench quality --quick --scenes fade``'s report, beside the scene and what
    the engine (fixed mode: the same run again) and each quick baseline make of it, here."""
    out = tmp_path_factory.mktemp("fade")
    res = CliRunner().invoke(app, ["bench", "quality", "--quick", "--scenes", "fade", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scene = bench_scene("fade", QUICK_FRAMES, QUICK_SIZE, 1)
    engine = run_engine(scene.movie, bench_config(lagsplit_overrides(QUICK_FRAMES, 1)))
    baselines = {m.family: (m.setting, m.run(scene.movie)) for m in online_grid(quick=True)}
    return (out / "BENCHMARKS.md").read_text(), scene, engine, baselines


def test_every_method_is_scored_after_warm_up_and_over_all_frames_from_the_first_after_the_longest_lag(fade_run):
    text, scene, engine, baselines = fade_run
    rows = _table(text, "| scene | method |")
    truth = scene.slow
    for family, slow in [(LAGSPLIT, engine.slow), *((f, s) for f, (_, s) in baselines.items())]:
        cells = rows[family]
        assert _num(cells[3]) == f"{nrmse(slow[FIRST:], truth[FIRST:]):.3f}", family
        assert _num(cells[4]) == f"{nrmse(slow[LAG_START:], truth[LAG_START:]):.3f}", family
    assert any(_num(c[3]) != _num(c[4]) for c in rows.values())  # two measurements, not one twice
    assert f"from frame {LAG_START} on, the first the engine emits after its longest lag" in text


def test_lagsplits_warm_up_frames_are_scored_beside_the_best_causal_baseline_on_the_same_frames(fade_run):
    text, scene, engine, baselines = fade_run
    truth = scene.slow
    flagged = np.flatnonzero(engine.warmup[LAG_START:]) + LAG_START
    assert len(flagged) > 0  # the quick run's short warm-up still leaves a few
    row = _table(text, "| scene | lagsplit slow, all frames |")["fade"]
    lag_all = nrmse(engine.slow[LAG_START:], truth[LAG_START:])
    every = {f: nrmse(s[LAG_START:], truth[LAG_START:]) for f, (_, s) in baselines.items()}
    best_all = min(every, key=every.get)
    assert row[1] == f"{lag_all:.3f}" and row[2] == f"{every[best_all]:.3f} ({best_all})"
    assert row[3] == ("wins" if lag_all < every[best_all] else f"**loses** (best: {best_all} {every[best_all]:.3f})")
    assert row[4] == str(int(np.flatnonzero(~engine.warmup)[0]))  # networks from
    joined = flagged[-1] - flagged[0] + 1 == len(flagged)
    assert row[5] == f"{len(flagged)} ({'' if joined else 'in '}{flagged[0]}-{flagged[-1]})"
    lag_warm = nrmse(engine.slow[flagged], truth[flagged])
    warm = {f: nrmse(s[flagged], truth[flagged]) for f, (_, s) in baselines.items()}
    best = min(warm, key=warm.get)
    assert row[6] == f"{lag_warm:.3f}"
    assert row[7] == f"{warm[best]:.3f} ({best}, {baselines[best][0]})"
    assert row[8] == ("no worse" if lag_warm <= warm[best] else f"**worse** (best: {best})")


def test_fast_frame_mean_bias_is_measured_against_the_truth_on_every_frame_of_a_fading_scene(fade_run):
    text, scene, engine, baselines = fade_run
    rows = _table(text, "| scene | method | setting | max, all frames |")
    every = {f: nrmse(s[LAG_START:], scene.slow[LAG_START:]) for f, (_, s) in baselines.items()}
    best = min(every, key=every.get)
    assert set(rows) == {LAGSPLIT, best}
    for family, slow in ((LAGSPLIT, engine.slow), (best, baselines[best][1])):
        bias = _frame_mean_bias(scene, slow)
        cells = rows[family]
        assert cells[3:7] == [f"{100 * bias[LAG_START:].max():.1f}%", f"{100 * bias[LAG_START:].mean():.1f}%",
                              str(LAG_START + int(np.argmax(bias[LAG_START:]))), f"{100 * bias[FIRST:].max():.1f}%"], family
    # a causal window a dozen frames long lags a sample that fades 1-2 % a frame
    assert bias[LAG_START:].mean() > 0.05


def test_lagsplits_slow_error_over_offline_robust_pcas_per_scene(fade_run):
    text, scene, engine, _ = fade_run
    rpca = RobustPCA(iterations=15).run(scene.movie)
    truth = scene.slow
    row = _table(text, "| scene | lagsplit slow | robust PCA slow | ratio |")["fade"]
    lag, rob = nrmse(engine.slow[FIRST:], truth[FIRST:]), nrmse(rpca[FIRST:], truth[FIRST:])
    lag_all, rob_all = nrmse(engine.slow[LAG_START:], truth[LAG_START:]), nrmse(rpca[LAG_START:], truth[LAG_START:])
    assert row[1:] == [f"{lag:.3f}", f"{rob:.3f}", f"{lag / rob:.2f}", f"{lag_all:.3f}", f"{rob_all:.3f}",
                       f"{lag_all / rob_all:.2f}"]
    for label, mine, theirs in (("after warm-up", lag, rob), ("over all frames", lag_all, rob_all)):
        line = (f"lagsplit beats offline robust PCA {label} on every scene." if mine < theirs else
                f"lagsplit does not beat offline robust PCA {label} on 1 of 1 scenes: fade.")
        assert line in text


def _scored(family: str, setting: str, slow: float, slow_all: float, online: bool = True,
            bias: np.ndarray | None = None) -> Score:
    return Score(family, setting, slow, 1.0, 0.9, online=online, slow_all=slow_all, bias=bias)


def test_verdicts_from_the_first_frame_name_where_lagsplit_loses_and_its_ratio_to_robust_pca():
    """Scene a: lagsplit wins after warm-up but loses over all frames, its warm-up is no worse,
    robust PCA beats it; scene b: it wins over all frames, its warm-up is worse. The baseline
    setting best over all frames is not the one best after warm-up."""
    bias = np.r_[np.full(LAG_START, 0.9), np.full(92, 0.01), [0.05], np.full(199, 0.02)]  # frames 0-7 not scored
    scenes = []
    for name, (lag, lag_all, warm_lag, rpca) in {"a": (0.20, 0.40, 0.30, 0.18), "b": (0.20, 0.25, 0.50, 0.25)}.items():
        scores = [_scored(LAGSPLIT, "1 step", lag, lag_all, bias=bias),
                  _scored("running median", "8 frames", 0.30, 0.33, bias=bias / 2),
                  _scored("running median", "32 frames", 0.25, 0.45),
                  _scored("robust PCA (offline)", "25 iterations", rpca, rpca, online=False)]
        warm = WarmupResult(np.arange(LAG_START, 40), 40, warm_lag, scores[1], 0.35)
        scenes.append(SceneResult(name, "notes", 300, 128, 100, _family_results(scores), start=LAG_START,
                                  warmup=warm, fading=name == "a"))
    text = quality_markdown(QualityRun(scenes, 1, "1 step(s)/frame", 60.0))
    line = next(line for line in text.splitlines() if line.startswith("| a | running median |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2] == "32 frames (F1: 8 frames; all frames: 8 frames)" and cells[3:5] == ["0.250", "0.330"]
    rows = _table(text, "| scene | lagsplit slow, all frames |")
    assert rows["a"][1:4] == ["0.400", "0.330 (running median)", "**loses** (best: running median 0.330)"]
    assert rows["a"][4:] == ["40", "32 (8-39)", "0.300", "0.350 (running median, 8 frames)", "no worse"]
    assert rows["b"][3] == "wins" and rows["b"][8] == "**worse** (best: running median)"
    assert ("Over all frames lagsplit beats the best online baseline on 1 of 2 scenes; it does not on a. "
            "On its warm-up frames it is no worse than the best causal baseline on 1 of 2 scenes; worse on b.") in text
    ratios = _table(text, "| scene | lagsplit slow | robust PCA slow | ratio |")
    assert ratios["a"][1:] == ["0.200", "0.180", "1.11", "0.400", "0.180", "2.22"]
    assert ratios["b"][1:] == ["0.200", "0.250", "0.80", "0.250", "0.250", "1.00"]
    assert "lagsplit does not beat offline robust PCA after warm-up on 1 of 2 scenes: a." in text
    assert "lagsplit does not beat offline robust PCA over all frames on 2 of 2 scenes: a, b." in text
    bias_rows = _table(text, "| scene | method | setting | max, all frames |")
    assert bias_rows[LAGSPLIT][3:] == ["5.0%", f"{100 * bias[LAG_START:].mean():.1f}%", "100", "5.0%"]
    assert bias_rows["running median"][2:] == ["8 frames", "2.5%", f"{50 * bias[LAG_START:].mean():.1f}%", "100", "2.5%"]


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
    at_512 = load_levers(ROOT / "configs" / "levers512.toml")
    assert at_512 and len({lv.name for lv in at_512}) == len(at_512)
    for lever in [*levers, *at_512]:
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
                                   "--frames", "30", "--scenes", "filaments", "--report", str(report)])
    assert res.exit_code == 0, res.output
    text = report.read_text()
    assert "<!-- levers:start -->" in text and START not in text and "## Levers\n" in text
    row = {r.split("|")[1].strip(): r.split("|") for r in text.splitlines() if r.startswith("| ")}
    default, off = float(row[DEFAULT][3]), float(row["no network"][3].split()[0])
    assert 0 < default < 5 and 0 < off < 5
    delta = float(row["no network"][3].split("(")[1].rstrip(") "))
    assert abs(delta - (off - default)) <= 0.0015  # the difference of the unrounded errors, rounded
    assert "Not run (none of the chosen scenes): elsewhere" in text


def test_levers_at_another_size_run_the_scaled_scenes_into_their_own_section(tmp_path, monkeypatch):
    from lagsplit.adapters.scenes import scene_knobs
    from lagsplit.bench import levers as levers_module

    played = []
    real = levers_module.bench_scene

    def noted(name, frames, size, seed, scaled=False):
        played.append((name, scaled))
        return real(name, frames, size, seed, scaled)

    monkeypatch.setattr(levers_module, "bench_scene", noted)

    levers = tmp_path / "levers.toml"
    levers.write_text('scenes = ["filaments"]\n[[lever]]\nname = "full resolution"\ndescription = "no binning"\n'
                      'set = ["model.work_size=0"]\n')
    report = tmp_path / "B.md"
    report.write_text("# Benchmarks\n\n<!-- levers:start -->\nthe 128 px levers\n<!-- levers:end -->\n")
    res = CliRunner().invoke(app, ["bench", "quality", "--levers", "--levers-file", str(levers), "--quick",
                                   "--frames", "30", "--size", "48", "--report", str(report)])
    assert res.exit_code == 0, res.output
    text = report.read_text()
    assert played == [("filaments", True)]  # the scene with its counts scaled to the size
    assert "the 128 px levers" in text  # the 128 px section stays
    section = text.split("<!-- levers48:start -->")[1].split("<!-- levers48:end -->")[0]
    assert "## Levers at 48x48 px" in section and "--size 48" in section
    knobs = scene_knobs("filaments", 48)
    assert knobs and all(f"{k}={v}" in section for k, v in knobs.items())  # the scene as crowded as at 128 px
    row = {r.split("|")[1].strip(): r.split("|") for r in section.splitlines() if r.startswith("| ")}
    assert 0 < float(row["full resolution"][3].split()[0]) < 5


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
