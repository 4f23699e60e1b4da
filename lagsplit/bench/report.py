"""Markdown for BENCHMARKS.md: the quality section (and one per other scene size), rewritten
in place between its markers so that sections other benchmarks write stay as they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..benchmarks_md import machine, update_section
from .levers import DEFAULT, LeversRun
from .quality import LAGSPLIT, SPOT_RECENT, STATS_ONLY, QualityRun, SceneResult


def markers(section: str) -> tuple[str, str]:
    """The start and end markers of a BENCHMARKS.md section."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


START, END = markers("quality")
LEVERS_SECTION = "levers"
"""BENCHMARKS.md's section that ``lagsplit bench quality --levers`` rewrites."""


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


F1_TIE = 0.005
"""F1 differences below this are ties: about the sampling error of an F1 near 0.9 over the
~5000 true spots of a scene's scored frames (sqrt(0.9 x 0.1 / 5000) = 0.004)."""


def verdict(res: SceneResult) -> str:
    """Does lagsplit beat the best online baseline on this scene, metric by metric?"""
    lag = res.get(LAGSPLIT)
    bs, bf = res.best_online("slow"), res.best_online("f1")
    lost, tied = [], []
    if lag.slow.slow >= bs.slow.slow:
        lost.append(f"slow (best: {bs.family} {_f(bs.slow.slow)})")
    if abs(lag.f1.f1 - bf.f1.f1) < F1_TIE:
        at_ceiling = res.ceiling_f1 is not None and lag.f1.f1 > res.ceiling_f1 - F1_TIE
        tied.append("F1" + (" at the true slow part's" if at_ceiling else ""))
    elif lag.f1.f1 < bf.f1.f1:
        lost.append(f"F1 (best: {bf.family} {_f(bf.f1.f1)})")
    out = "**loses** " + ", ".join(lost) if lost else "wins"
    if tied:
        out += (" slow" if not lost else "") + f"; ties {', '.join(tied)} (within {F1_TIE})"
    return out


def verdict_all(res: SceneResult) -> str:
    """Does lagsplit's slow beat the best online baseline's over all frames from the scene's start?"""
    lag, best = res.get(LAGSPLIT).slow_all, res.best_online("slow_all")
    if lag.slow_all < best.slow_all.slow_all:
        return "wins"
    return f"**loses** (best: {best.family} {_f(best.slow_all.slow_all)})"


def verdict_warmup(res: SceneResult) -> str:
    """Is lagsplit's slow on its warm-up frames no worse than the best causal baseline's there?"""
    w = res.warmup
    if w is None:
        return "-"
    if not len(w.frames):
        return "no warm-up frames"
    return "no worse" if w.no_worse else f"**worse** (best: {w.best.family if w.best else '-'})"


def _frames_note(frames: np.ndarray) -> str:
    """How many frames, and from which to which (with 'in' when they are not one run)."""
    if not len(frames):
        return "0"
    lo, hi = int(frames[0]), int(frames[-1])
    joined = hi - lo + 1 == len(frames)
    return f"{len(frames)} ({lo}-{hi})" if joined else f"{len(frames)} (in {lo}-{hi})"


def _pct(x: float) -> str:
    return "-" if np.isnan(x) else f"{100 * x:.1f}%"


def _from_start_lines(run: QualityRun) -> list[str]:
    """Slow over all frames from the engine's first after its longest lag, and lagsplit's
    warm-up frames against the best causal baseline on the same frames."""
    rows = [r for r in run.scenes if r.start is not None]
    if not rows:
        return []
    start = rows[0].start
    lines = ["### From the first frame", "",
             f"Slow NRMSE over all frames from frame {start}, the first the engine emits after its longest lag "
             f"(max(model.lags) = {start}), the same frames for every method (online baselines: the best setting "
             "of their grid on these frames). lagsplit's warm-up frames are those it flagged from frame "
             f"{start} on (its networks not in use: the first frames, and the frames settling after a sudden "
             "change); on the same frames, the online baseline setting best there (every online baseline is "
             "causal). networks from: the first frame lagsplit's networks were in use.", "",
             "| scene | lagsplit slow, all frames | best online slow, all frames | all frames | networks from | "
             "warm-up frames | lagsplit slow, warm-up | best causal slow, warm-up | warm-up |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lag, best, w = r.get(LAGSPLIT).slow_all, r.best_online("slow_all"), r.warmup
        cells = ["-", "-", "-", "-"]
        if w is not None:
            causal = f"{_f(w.best_slow)} ({w.best.family}, {w.best.setting})" if w.best else "-"
            cells = ["never" if w.net_from is None else str(w.net_from), _frames_note(w.frames),
                     _f(w.lagsplit), causal]
        lines.append(f"| {r.name} | {_f(lag.slow_all)} | {_f(best.slow_all.slow_all)} ({best.family}) | "
                     f"{verdict_all(r)} | {' | '.join(cells)} | {verdict_warmup(r)} |")
    lost = [r.name for r in rows if verdict_all(r) != "wins"]
    worse = [r.name for r in rows if r.warmup is not None and len(r.warmup.frames) and not r.warmup.no_worse]
    lines += ["", f"Over all frames lagsplit beats the best online baseline on {len(rows) - len(lost)} of "
              f"{len(rows)} scenes" + (f"; it does not on {', '.join(lost)}" if lost else "") + ". "
              f"On its warm-up frames it is no worse than the best causal baseline on {len(rows) - len(worse)} of "
              f"{len(rows)} scenes" + (f"; worse on {', '.join(worse)}" if worse else "") + ".", ""]
    return lines


def _change(mine: float, other: float) -> str:
    """How ``mine`` compares with ``other``, e.g. "8.6% lower than (0.142 against 0.155)"."""
    word = f"{_pct(1 - mine / other)} lower than" if mine <= other else f"{_pct(mine / other - 1)} higher than"
    return f"{word} ({_f(mine)} against {_f(other)})"


def _learned_lines(run: QualityRun) -> list[str]:
    """What the learned part adds: lagsplit's slow beside the same engine with the networks
    off (``train.mode = "off"``), and beside the best statistics on each scene (the better
    of that and the best online baseline), after warm-up, with their means over the scenes."""
    rows = [r for r in run.scenes if any(f.family == STATS_ONLY for f in r.families)]
    if not rows:
        return []
    lines = ["### What the learned part adds", "",
             "Slow NRMSE after warm-up of lagsplit and of the same engine with its networks off "
             "(`train.mode = \"off\"`: slow from its window statistics alone); best statistics: the better of that "
             "and the best online baseline on the scene. gain: how much lower lagsplit's slow is than the best "
             "statistics' (negative: higher).", "",
             "| scene | lagsplit slow | statistics only | best online slow | best statistics | gain |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    mine, stats, best = [], [], []
    for r in rows:
        lag, off, online = r.get(LAGSPLIT).slow.slow, r.get(STATS_ONLY).slow.slow, r.best_online("slow")
        floor = min(off, online.slow.slow)
        mine.append(lag)
        stats.append(off)
        best.append(floor)
        lines.append(f"| {r.name} | {_f(lag)} | {_f(off)} | {_f(online.slow.slow)} ({online.family}) | {_f(floor)} | "
                     f"{_pct(1 - lag / floor)} |")
    m, s, b = (float(np.mean(v)) for v in (mine, stats, best))
    lines.append(f"| mean | {_f(m)} | {_f(s)} | | {_f(b)} | {_pct(1 - m / b)} |")
    worse = [r.name for r, lag, floor in zip(rows, mine, best) if lag > 1.02 * floor]
    lines += ["", f"Mean over the scenes: lagsplit's slow NRMSE is {_change(m, s)} the engine's with its networks "
              f"off, and {_change(m, b)} the best statistics on each scene; lagsplit is worse than the best "
              f"statistics by more than 2 % on " + (", ".join(worse) if worse else "no scene") + ".", ""]
    return lines


def _offline_lines(run: QualityRun) -> list[str]:
    """lagsplit's slow NRMSE over offline robust PCA's, per scene (on the central crop where
    robust PCA ran on one)."""
    pairs = [(r, r.offline()) for r in run.scenes]
    pairs = [(r, p) for r, p in pairs if p is not None]
    if not pairs:
        return []
    cropped = any(p[1].crop for _, p in pairs)
    lines = ["### lagsplit against offline robust PCA", "",
             "Slow NRMSE of lagsplit (causal) over that of offline robust PCA (non-causal: it sees the whole "
             "movie), after warm-up and over all frames; below 1, lagsplit is better" +
             (", on the central crop robust PCA ran on" if cropped else "") + ".", "",
             "| scene | lagsplit slow | robust PCA slow | ratio | lagsplit slow, all frames | "
             "robust PCA slow, all frames | ratio, all frames |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    for r, (lag, rpca) in pairs:
        lines.append(f"| {r.name} | {_f(lag.slow)} | {_f(rpca.slow)} | {_f(ratio(lag.slow, rpca.slow), 2)} | "
                     f"{_f(lag.slow_all)} | {_f(rpca.slow_all)} | {_f(ratio(lag.slow_all, rpca.slow_all), 2)} |")
    lines.append("")
    for label, key in (("after warm-up", "slow"), ("over all frames", "slow_all")):
        known = [(r, p) for r, p in pairs if not np.isnan(getattr(p[0], key))]
        if not known:
            continue
        behind = [r.name for r, (lag, rpca) in known if not getattr(lag, key) < getattr(rpca, key)]
        lines.append(f"lagsplit beats offline robust PCA {label} on every scene." if not behind else
                     f"lagsplit does not beat offline robust PCA {label} on {len(behind)} of {len(known)} scenes: "
                     f"{', '.join(behind)}.")
    losing = [(r, lag, rpca) for r, (lag, rpca) in pairs if not lag.slow < rpca.slow and r.floors and lag.spots
              and rpca.spots]
    return lines + [""] + _why_behind_lines(losing)


def _why_behind_lines(losing: list) -> list[str]:
    """Where lagsplit loses to robust PCA after warm-up, what the numbers say about why:
    the noise floors of a causal and of a whole-movie average, and the slow error on the
    pixels spots visited."""
    if not losing:
        return []
    lines = ["Why, measured (after warm-up). causal floor: the slow NRMSE the noise alone leaves in a perfect "
             "average (no spot, no lag) of the frames up to each frame, as many as lagsplit's longest window "
             "holds; whole-movie floor: the same averaged over every frame of the movie, as an offline method "
             f"may. spot-visited: the share of pixels a spot covered within the last {SPOT_RECENT} frames (the "
             "true fast part averaged over them above a tenth of the noise's standard deviation); error there: "
             "the share of the method's squared slow error on those pixels; bias there: its mean signed slow "
             "error there, in standard deviations of the true slow part (positive: slow too bright).", "",
             "| scene | lagsplit slow | robust PCA slow | causal floor | whole-movie floor | spot-visited | "
             "lagsplit error there | lagsplit bias there | robust PCA error there | robust PCA bias there |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for r, lag, rpca in losing:
        area, causal, whole = r.floors
        (ls, lb), (rs, rb) = lag.spots, rpca.spots
        lines.append(f"| {r.name} | {_f(lag.slow)} | {_f(rpca.slow)} | {_f(causal)} | {_f(whole)} | {area:.0%} | "
                     f"{ls:.0%} | {lb:+.3f} | {rs:.0%} | {rb:+.3f} |")
        why = []
        if lb > 0 and lb > rb:
            where = (f"{ls:.0%} of its squared error lies on the {area:.0%} of pixels spots visited" if ls > 1.5 * area
                     else f"spots visited {area:.0%} of the pixels within {SPOT_RECENT} frames (a crowded sample)")
            why.append(f"spots leak into lagsplit's slow: {where}, where it is too bright by {lb:+.3f} sd (robust "
                       f"PCA {rb:+.3f}); its window statistics see only the frames before, where a passing spot "
                       "lingered, while robust PCA weighs each pixel's whole movie")
        if rpca.slow < causal:
            why.append(f"robust PCA's error ({_f(rpca.slow)}) is below the noise floor of any causal average of "
                       f"that many frames ({_f(causal)}): it averages the frames after each one as well "
                       f"(whole-movie floor {_f(whole)})")
        if lag.slow < causal:
            why.append(f"lagsplit is already below that causal floor ({_f(lag.slow)} against {_f(causal)}): its "
                       "network smooths in space as well")
        if not why:
            why.append("neither the noise floor nor the spots explain the gap")
        notes.append(f"- **{r.name}**: " + "; ".join(why) + ".")
    return lines + [""] + notes + [""]


def _bias_lines(run: QualityRun) -> list[str]:
    """The fast frame-mean bias on the scenes whose sample fades, lagsplit beside the online
    baseline best over all frames."""
    rows = [r for r in run.scenes if r.fading and r.start is not None]
    if not rows:
        return []
    start, first = rows[0].start, rows[0].first
    lines = ["### Fast frame-mean bias on the fading scenes", "",
             "Per frame, |mean(fast) - mean(true fast)| / mean(true slow above the camera offset): how far the "
             "frame mean of fast = raw - slow is from its true mean, as a share of the sample's brightness in "
             f"that frame. The largest and the mean over all frames from frame {start}, the frame of the "
             f"largest, and the largest after warm-up (frames {first} on); lagsplit and the online baseline "
             "best over all frames, at its best setting there.", "",
             "| scene | method | setting | max, all frames | mean, all frames | at frame | max after warm-up |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        best = r.best_online("slow_all")
        for fam, sc in ((LAGSPLIT, r.get(LAGSPLIT).slow_all), (best.family, best.slow_all)):
            if sc.bias is None:
                continue
            b = sc.bias[r.start:]
            at = r.start + int(np.argmax(b))
            lines.append(f"| {r.name} | {fam} | {sc.setting} | {_pct(float(b.max()))} | {_pct(float(b.mean()))} | "
                         f"{at} | {_pct(float(sc.bias[r.first:].max()))} |")
    return lines + [""]


WHY_LOSES = {
    "drift": "the sample moves, and slow is predicted from frames at least the slow lag old, by windows that "
             "lag by half their length; the network has to learn the extrapolation during the unscored frames, while a short "
             "blurred running median ending at the current frame lags less.",
    "dense": "with much of the field covered by spots, every window statistic is pulled up by them; "
             "MOG2 models the spots as a second mode of each pixel.",
    "lowlight": "at a few photons per pixel the noise level estimated from the window's lower quartile is "
                "coarse (integer counts), so the clipping keeps or cuts more than it should.",
    "step": "slow is predicted from frames at least the slow lag old; for the first frames after the change it is "
            "the statistic of the few frames since then.",
    "jump": "as for step: the frames just after the jump have only a few frames of the new field to go on.",
}
"""Why lagsplit loses a scene, printed for the scenes it loses (the mechanism; each scene's
parameters are in its notes, generated with it)."""


def f1_note(run: QualityRun) -> str:
    """Why F1 ties: how many scenes the true slow part itself cannot separate from the baselines."""
    sat = [r.name for r in run.scenes if r.ceiling_f1 is not None
           and r.best_online("f1").f1.f1 > r.ceiling_f1 - F1_TIE]
    text = ("F1 separates the methods by little: the spots stand well above the noise, so each method at its own "
            "best threshold finds nearly all of them; differences in background show up in slow and fast NRMSE "
            "more than in F1.")
    if sat:
        text += (f" On {len(sat)} of {len(run.scenes)} scenes ({', '.join(sat)}) the best online baseline is "
                 f"already within {F1_TIE} of the F1 of the true slow part (column \"true slow F1\": fast = raw "
                 "minus the noise-free slow part, through the same detector): no slow estimate can do better "
                 "there than tie.")
    return text


def _crowding(size: int, knobs: dict[str, dict]) -> str:
    """The sentence saying how the scenes (name -> their counts other than the defaults)
    were scaled to ``size`` px."""
    scenes = ", ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in kn.items())})" if kn else name
                       for name, kn in knobs.items())
    return (f"The scenes at {size}x{size} px are as crowded as the 128x128 px ones of the quality table "
            f"(spot counts scaled with the area, filament counts with the side): {scenes}.")


def _sized_note(run: QualityRun) -> str:
    """What a run at a size other than 128 px changes: the scenes' counts, lagsplit's binning."""
    s0 = run.scenes[0]
    text = _crowding(s0.size, {r.name: r.knobs for r in run.scenes}) + " "
    if run.binning > 1:
        text += (f"lagsplit runs the default model, whose slow stage works on frames binned {run.binning}x"
                 f"{run.binning} to at most model.work_size = {run.work_size} px a side, slow's fine detail "
                 "coming back from a clipped running mean at full resolution; every baseline works on the "
                 "full-resolution frames.")
    else:
        text += f"lagsplit's slow stage works on the full-resolution frames (model.work_size = {run.work_size} px)."
    return text


def _crop_lines(run: QualityRun) -> list[str]:
    """Offline robust PCA on a central crop, lagsplit scored on the same crop beside it."""
    rows = [r for r in run.scenes if r.crop]
    if not rows:
        return []
    s0 = rows[0]
    side = s0.crop[0].crop
    setting = next(s.setting for s in s0.crop if s.family != LAGSPLIT)
    lines = [f"### Offline robust PCA on the central {side}x{side} px", "",
             f"Robust PCA factorises the whole movie as one (frames, pixels) matrix, {s0.frames} x "
             f"{s0.size * s0.size} at {s0.size}x{s0.size} px; it runs ({setting}) on the central {side}x{side} px "
             "of the same frames, and lagsplit's slow from the full-frame run above is scored on the same crop.", "",
             "| scene | lagsplit slow | robust PCA slow | lagsplit F1 | robust PCA F1 | robust PCA time (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    pairs = []
    for r in rows:
        lag = next(s for s in r.crop if s.family == LAGSPLIT)
        rpca = next(s for s in r.crop if s.family != LAGSPLIT)
        pairs.append((lag, rpca))
        lines.append(f"| {r.name} | {_f(lag.slow)} | {_f(rpca.slow)} | {_f(lag.f1)} | {_f(rpca.f1)} | "
                     f"{rpca.seconds:.1f} |")
    ls, rs = (float(np.mean([p[i].slow for p in pairs])) for i in (0, 1))
    lines += ["", f"Mean slow NRMSE on the crop: lagsplit {_f(ls)}, robust PCA (offline) {_f(rs)}.", ""]
    return lines


def quality_markdown(run: QualityRun, recordings: str = "") -> str:
    start, end = markers(run.section)
    s0 = run.scenes[0]
    sized = run.section != "quality"
    lines = [start, "## Decomposition quality" + (f" at {s0.size}x{s0.size} px" if sized else ""), ""]
    cmd = run.command or "lagsplit bench quality"
    lines += [f"Command: `{cmd}`  ", f"Machine: {machine()}  ",
              f"Total time: {run.seconds / 60:.1f} min. lagsplit: the engine in fixed mode, "
              f"{run.lagsplit_setting}, default model.", ""]
    if sized:
        lines += [_sized_note(run), ""]
    scored = (f"Scenes of {s0.frames} frames of {s0.size}x{s0.size} px. slow, fast, F1 and recovery are scored "
              f"after warm-up, from frame {s0.first} on (a third of the movie), the same frames for every method")
    if s0.start is not None:
        scored += (f"; slow, all frames over every frame from frame {s0.start} on, the first the engine emits "
                   f"after its longest lag (max(model.lags) = {s0.start})")
    lines += [scored + ". slow / fast: NRMSE (RMSE over the standard deviation of the "
              "truth; lower is better) of the slow part and of fast = raw - slow against the noise-free truth. "
              "F1: spot detection on fast (a Gaussian filter matched to the spot size, local maxima, matched "
              "one-to-one within 2 px to the true spots; each method at its own best threshold, found by trying every "
              "candidate's response; differences "
              f"below {F1_TIE} are ties). Online baselines: best setting of their grid per metric "
              "(the setting column names it). recovery: frames after the sudden change until the slow error is "
              "within 10% of its level before it.", ""]
    lines += ["| scene | method | setting | slow | slow, all frames | fast | F1 | recovery | time (s) |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for res in run.scenes:
        best_slow = min(f.slow.slow for f in res.families)
        best_all = min(f.slow_all.slow_all for f in res.families)
        best_f1 = max(f.f1.f1 for f in res.families)
        for fam in res.families:
            slow = _f(fam.slow.slow)
            slow_all = _f(fam.slow_all.slow_all)
            f1 = _f(fam.f1.f1)
            slow = f"**{slow}**" if fam.slow.slow == best_slow else slow
            slow_all = f"**{slow_all}**" if fam.slow_all.slow_all == best_all else slow_all
            f1 = f"**{f1}**" if fam.f1.f1 == best_f1 else f1
            rec = "-" if res.change_at is None else ("never" if fam.slow.recovery is None else str(fam.slow.recovery))
            name = fam.family if fam.online else f"{fam.family} *"
            lines.append(f"| {res.name} | {name} | {fam.settings_note} | {slow} | {slow_all} | {_f(fam.slow.fast)} | "
                         f"{f1} | {rec} | {fam.seconds:.1f} |")
    has_offline = any(not f.online for r in run.scenes for f in r.families)
    lines += ["", ("\\* offline, non-causal reference (sees the whole movie). " if has_offline else "") +
              "Bold: best on the scene.", ""]
    lines += ["### lagsplit against the baselines", "", "After warm-up.", "",
              "| scene | lagsplit slow | best online slow | lagsplit F1 | best online F1 | true slow F1 | verdict |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for res in run.scenes:
        lag = res.get(LAGSPLIT)
        bs, bf = res.best_online("slow"), res.best_online("f1")
        lines.append(f"| {res.name} | {_f(lag.slow.slow)} | {_f(bs.slow.slow)} ({bs.family}) | {_f(lag.f1.f1)} | "
                     f"{_f(bf.f1.f1)} ({bf.family}) | {_f(res.ceiling_f1)} | {verdict(res)} |")
    means = _means(run)
    if means:
        lines += ["", "Mean over the scenes: " + "; ".join(
            f"{fam}: slow {_f(s)} (all frames {_f(a)}), F1 {_f(f)}" for fam, (s, f, a) in means.items()), ""]
        offline = [f.family for f in run.scenes[0].families if not f.online]
        if LAGSPLIT in means and offline:
            (ls, lf, _), (rs, rf, _) = means[LAGSPLIT], means[offline[0]]
            word = "better" if ls < rs else "worse"
            lines += [f"lagsplit's mean slow NRMSE is {word} than offline {offline[0]}'s: {_f(ls)} against "
                      f"{_f(rs)} (F1 {_f(lf)} against {_f(rf)}).", ""]
    lines += _learned_lines(run)
    losing = [r for r in run.scenes if "loses" in verdict(r)]
    if losing:
        lines += ["Where lagsplit loses, and why:", ""]
        lines += [f"- **{r.name}** ({r.notes}): {WHY_LOSES.get(r.name, 'not analysed.')}" for r in losing]
        lines.append("")
    if any("ties" in verdict(r) for r in run.scenes):
        lines += [f1_note(run), ""]
    lines += _from_start_lines(run)
    lines += _offline_lines(run)
    lines += _bias_lines(run)
    lines += _crop_lines(run)
    if recordings:
        lines += ["", recordings.strip(), ""]
    figs = [r.figure for r in run.scenes if r.figure is not None]
    if figs:
        lines += ["", "Figures (original | slow | fast | composite, lagsplit): " +
                  ", ".join(f"`{Path(p).as_posix()}`" for p in figs), ""]
    lines.append(end)
    return "\n".join(lines) + "\n"


def _means(run: QualityRun) -> dict[str, tuple[float, float, float]]:
    """Per family: mean slow NRMSE after warm-up, mean F1, mean slow NRMSE over all frames."""
    fams = [f.family for f in run.scenes[0].families]
    out = {}
    for fam in fams:
        try:
            rows = [r.get(fam) for r in run.scenes]
        except StopIteration:
            continue
        out[fam] = (float(np.mean([r.slow.slow for r in rows])), float(np.mean([r.f1.f1 for r in rows])),
                    float(np.mean([r.slow_all.slow_all for r in rows])))
    return out


def write_section(path: Path, section: str, name: str = "quality") -> Path:
    """Replace the section ``name`` (the quality table's, or a size's ``quality<N>``) of
    ``path`` with ``section`` (or append it); everything else stays."""
    start, end = markers(name)
    body = section.split(start, 1)[-1].split(end, 1)[0]
    return update_section(name, body, path)


def _compare(lever: float, default: float) -> int:
    """-1 better, 0 same, 1 worse: the lever's slow NRMSE against the default's, as printed."""
    a, b = round(lever, 3), round(default, 3)
    return (a > b) - (a < b)


def _lever_summary(run: LeversRun, name: str) -> str:
    """Where the lever is better or worse than the default, from this run's numbers."""
    verdicts = {scene: _compare(s.slow, run.scores[DEFAULT][scene].slow) for scene, s in run.scores[name].items()}
    parts = []
    for word, v in (("better", -1), ("same", 0), ("worse", 1)):
        scenes = [scene for scene, x in verdicts.items() if x == v]
        if scenes:
            parts.append(f"{word}: {', '.join(scenes)}")
    return "; ".join(parts)


def levers_markdown(run: LeversRun) -> str:
    """The levers section: each lever's slow NRMSE per scene beside the default's, all
    measured in ``run``; every number and verdict is computed here from ``run``."""
    cmd = run.command or "lagsplit bench quality --levers"
    title = "## Levers" if run.section == LEVERS_SECTION else f"## Levers at {run.size}x{run.size} px"
    crowded = " " + _crowding(run.size, run.knobs) if run.knobs else ""
    lines = [title, "", f"Command: `{cmd}`  ", f"Machine: {machine()}  ",
             f"Total time: {run.seconds / 60:.1f} min." + (f" Levers: `{run.source}`." if run.source else ""), "",
             f"Slow NRMSE (lower is better) on frames {run.first}-{run.frames - 1} of the {run.frames}-frame "
             f"{run.size}x{run.size} px scenes (seed {run.seed}), lagsplit through the engine in fixed mode.{crowded} "
             f"The default row is the benchmark's configuration ({run.setting}); each lever changes only the "
             "settings in its row, and its cells give its slow NRMSE and, in brackets, the difference from the "
             "default on the same scene in this run. s/scene: mean seconds of one engine run.", ""]
    default = run.scores[DEFAULT]
    lines += ["| lever | settings | " + " | ".join(run.scenes) + " | s/scene | against the default |",
              "| --- | --- | " + " | ".join("---:" for _ in run.scenes) + " | ---: | --- |"]
    cells = [_f(default[s].slow) if s in default else "" for s in run.scenes]
    lines.append(f"| {DEFAULT} | | " + " | ".join(cells) + f" | {_mean_seconds(default):.1f} | |")
    for lever in run.levers:
        mine = run.scores.get(lever.name, {})
        cells = [f"{_f(mine[s].slow)} ({mine[s].slow - default[s].slow:+.3f})" if s in mine else ""
                 for s in run.scenes]
        sets = ", ".join(f"`{x}`" for x in lever.sets)
        lines.append(f"| {lever.name} | {sets} | " + " | ".join(cells) +
                     f" | {_mean_seconds(mine):.1f} | {_lever_summary(run, lever.name)} |")
    lines += ["", "What each lever changes:", ""]
    lines += [f"- **{lever.name}**: {lever.description}" for lever in run.levers]
    if run.skipped:
        lines += ["", f"Not run (none of the chosen scenes): {', '.join(run.skipped)}."]
    return "\n".join(lines) + "\n"


def _mean_seconds(scores: dict) -> float:
    return float(np.mean([s.seconds for s in scores.values()])) if scores else float("nan")


def write_levers(path: Path, section: str, name: str = LEVERS_SECTION) -> Path:
    """Replace the levers section ``name`` of ``path`` (``levers``, or a size's
    ``levers<N>``) with ``section`` (or append it); everything else stays."""
    return update_section(name, section, path)
