"""Levers: named sets of settings, each run on a few scenes next to the benchmark's
default configuration in the same run (``lagsplit bench quality --levers``).

A lever is what a claim such as "two training steps per frame help on drift" rests on:
the claim is a row of the table this writes, re-measured whenever the command runs.
The levers live in ``configs/levers.toml``::

    scenes = ["filaments", "drift"]      # a lever's scenes unless it names its own

    [[lever]]
    name = "gate off"
    description = "the network's correction is always used in full"
    set = ["model.gate_decay=0"]         # --set syntax
    scenes = ["drift"]                   # optional
"""
from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lagsplit.adapters.scenes import REFERENCE_SIZE, SCENES, scene_knobs
from lagsplit.engine.nets import precision_label

from ..config import ConfigError, merge_settings, parse_overrides
from ..metrics import nrmse
from .engine_method import bench_config, run_engine
from .quality import bench_scene, lagsplit_overrides, section_name

LEVERS_FILE = Path("configs/levers.toml")
"""Where ``--levers`` looks for the levers unless told otherwise (relative to the working folder)."""

DEFAULT = "default"
"""The row of the benchmark's own configuration (no lever applied)."""


@dataclass(frozen=True)
class Lever:
    """One named change of settings and the scenes it is measured on."""

    name: str
    description: str
    sets: tuple[str, ...]
    scenes: tuple[str, ...]

    @property
    def overrides(self) -> dict:
        """The settings as a nested dict (``{"model": {"gate_decay": 0}}``)."""
        return parse_overrides(list(self.sets))


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a non-empty list of strings, got {value!r}")
    return tuple(value)


def load_levers(path: str | Path = LEVERS_FILE) -> list[Lever]:
    """The levers of ``path``, each checked: known keys, known scenes, unique names, and
    settings that exist and validate (so a run never fails after an hour on a typo)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"levers file {p} does not exist")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"levers file {p} is not valid TOML: {exc}") from exc
    unknown = set(doc) - {"scenes", "lever"}
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {', '.join(sorted(unknown))} (expected scenes and [[lever]] tables)")
    default_scenes = _strings(doc["scenes"], f"{p}: scenes") if "scenes" in doc else None
    entries = doc.get("lever", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{p}: no [[lever]] tables")
    levers: list[Lever] = []
    for i, entry in enumerate(entries):
        where = f"{p}: lever {entry.get('name', i + 1)!r}"
        extra = set(entry) - {"name", "description", "set", "scenes"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))} "
                              "(a lever has name, description, set and optionally scenes)")
        for key in ("name", "description"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConfigError(f"{where}: {key} is missing or empty")
        if entry["name"] == DEFAULT or any(lv.name == entry["name"] for lv in levers):
            raise ConfigError(f"{where}: the name is taken (names must be unique and not {DEFAULT!r})")
        sets = _strings(entry.get("set"), f"{where}: set")
        if "scenes" in entry:
            scenes = _strings(entry["scenes"], f"{where}: scenes")
        elif default_scenes is not None:
            scenes = default_scenes
        else:
            raise ConfigError(f"{where}: no scenes (give the lever scenes = [...] or the file a top-level scenes)")
        bad = [s for s in scenes if s not in SCENES]
        if bad:
            raise ConfigError(f"{where}: unknown scene(s) {', '.join(bad)}; known: {', '.join(SCENES)}")
        lever = Lever(entry["name"], " ".join(entry["description"].split()), sets, scenes)
        try:
            bench_config(lagsplit_overrides(300, 1, lever.overrides))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        levers.append(lever)
    return levers


@dataclass
class LeverScore:
    """One configuration on one scene."""

    slow: float  # NRMSE of slow against the true slow part, on the scored frames
    seconds: float  # the engine run


@dataclass
class LeversRun:
    """The default configuration and every lever on its scenes, from one run."""

    levers: list[Lever]
    scenes: list[str]
    scores: dict[str, dict[str, LeverScore]]  # configuration (DEFAULT or a lever's name) -> scene -> score
    frames: int
    size: int
    seed: int
    first: int
    setting: str
    seconds: float
    command: str = ""
    quick: bool = False
    source: str = ""  # the levers file
    skipped: list[str] = field(default_factory=list)  # levers with none of the chosen scenes
    section: str = "levers"  # the BENCHMARKS.md section: ``levers`` at 128 px, else ``levers<size>``
    knobs: dict[str, dict] = field(default_factory=dict)  # scene -> counts scaled to the size (other sizes)


def run_levers(levers: Sequence[Lever], scenes: Sequence[str] | None = None, frames: int = 300, size: int = 128,
               seed: int = 1, steps: int = 1, quick: bool = False, overrides: dict | None = None,
               init: str | None = None, log: Callable[[str], None] = print) -> LeversRun:
    """Every lever on each of its scenes (only those in ``scenes`` when given), and the
    default configuration on every scene a lever runs on. ``overrides`` (``--set``) apply to
    the default and under every lever. ``quick``: small movies (for tests). At a ``size``
    other than 128 px the scenes are as crowded as at 128 px (their counts scaled, as the
    quality table at that size has them), and the run belongs in its own section,
    ``levers<size>``."""
    scaled = size != REFERENCE_SIZE
    section = section_name(size, "levers")
    if quick:
        frames, size = min(frames, 60), min(size, 48)
    base = overrides or {}
    chosen = [lv for lv in levers if scenes is None or set(lv.scenes) & set(scenes)]
    skipped = [lv.name for lv in levers if lv not in chosen]
    names = [s for s in SCENES if any(s in lv.scenes for lv in chosen) and (scenes is None or s in scenes)]
    first = frames // 3
    t0 = time.perf_counter()
    scores: dict[str, dict[str, LeverScore]] = {DEFAULT: {}}
    for name in names:
        scene = bench_scene(name, frames, size, seed, scaled)
        log(f"scene {name} ({frames} frames of {size}x{size})")
        for label, extra in [(DEFAULT, base), *[(lv.name, merge_settings(base, lv.overrides))
                                                 for lv in chosen if name in lv.scenes]]:
            run = run_engine(scene.movie, bench_config(lagsplit_overrides(frames, steps, extra), init=init))
            s = LeverScore(nrmse(run.slow[first:], scene.slow[first:]), run.seconds)
            scores.setdefault(label, {})[name] = s
            log(f"  {name}: {label}: slow {s.slow:.3f} ({s.seconds:.0f} s)")
    cfg = bench_config(lagsplit_overrides(frames, steps, base), init=init)
    m, tr = cfg.model, cfg.train
    setting = (f"{tr.steps_per_frame} step(s)/frame, lags {list(m.lags)}, windows {list(m.windows)}, "
               f"width {m.base_channels}, warm-up {tr.warmup_steps} steps, learning rate {tr.lr:g}, "
               f"networks in {precision_label(m.precision, m.device)}, {m.threads} torch thread(s)"
               + (f", from weights {init}" if init else ""))
    knobs = {name: scene_knobs(name, size) for name in names} if scaled else {}
    return LeversRun(list(chosen), names, scores, frames, size, seed, first, setting, time.perf_counter() - t0,
                     quick=quick, skipped=skipped, section=section, knobs=knobs)

