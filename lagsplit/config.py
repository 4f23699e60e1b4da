"""The whole run's configuration: defaults < TOML file < environment < command line.

Environment: ``LAGSPLIT_<SECTION>__<FIELD>=value`` (e.g. ``LAGSPLIT_TRAIN__MODE=fixed``).
Command line: ``--set section.field=value``. Values are read as TOML (numbers,
booleans, arrays like ``[8, 4]``); anything else is a string.
"""
from __future__ import annotations

import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from lagsplit.adapters.sources import SOURCE_KINDS, SourceConfig, SyntheticSource
from lagsplit.engine.config import ModelConfig, MonitorConfig, OutputConfig, RuntimeConfig, Settings, TrainConfig

ENV_PREFIX = "LAGSPLIT_"


class Config(Settings):
    """Everything a run needs; ``configs/default.toml`` lists every field with its meaning."""

    source: SourceConfig = Field(default_factory=SyntheticSource)
    """Where frames come from; ``kind`` selects the adapter."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The lag autoencoders."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Online fine-tuning."""
    engine: RuntimeConfig = Field(default_factory=RuntimeConfig)
    """Queues and overflow policy."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    """The HDF5 file."""
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    """The live console monitor."""

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user."""


def parse_value(text: str) -> Any:
    """A command-line / environment value: TOML literal when it parses, else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(tree: dict, dotted: str, value: Any, origin: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"{origin}: {dotted!r} must name section.field, e.g. train.mode")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts[:-1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def merge_settings(base: dict, over: dict) -> dict:
    """``over`` laid onto ``base``, section by section (nested dicts merge, values replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str], tree: dict | None = None) -> dict:
    """``section.field=value`` items (``--set``) as a nested dict, laid onto a copy of ``tree``.
    Values are read by :func:`parse_value`; a malformed item is a :class:`ConfigError`."""
    out = copy.deepcopy(tree or {})
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.field=value")
        key, value = item.split("=", 1)
        _set_path(out, key.strip(), parse_value(value.strip()), f"--set {item}")
    return out


def _describe_error(err: dict) -> str:
    loc = [str(p) for p in err["loc"]]
    if len(loc) >= 2 and loc[0] == "source" and loc[1] in SOURCE_KINDS:
        loc.pop(1)  # the union tag is not a field
    field = ".".join(loc) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown setting (check the spelling; configs/default.toml lists every field)"
    if err["type"] == "union_tag_invalid":
        return f"{field}.kind: must be one of {', '.join(SOURCE_KINDS)} (got {err['input'].get('kind')!r})" if isinstance(err.get("input"), dict) else f"{field}: {msg}"
    if err["type"] == "missing":
        return f"{field}: required setting is missing"
    if err["type"] == "value_error":
        return f"{field}: {msg.removeprefix('Value error, ')}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{field}: {msg}{shown}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                env: dict[str, str] | None = None, base: dict | None = None) -> Config:
    """Build the effective config. ``base`` are command defaults (e.g. a replay's stack)
    that sit between the built-in defaults and the file."""
    tree: dict = copy.deepcopy(base or {})
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tree = merge_settings(tree, tomllib.loads(p.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    env = os.environ if env is None else env
    for key, value in sorted(env.items()):
        if key.startswith(ENV_PREFIX) and "__" in key:
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_path(tree, dotted, parse_value(value), f"environment {key}")
    tree = parse_overrides(overrides or [], tree)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        lines = [_describe_error(e) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def toml_value(v: Any) -> str:
    """``v`` as a TOML literal: what a config file holds and a ``--set`` value is read as."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def _section(name: str, model: type[Settings], values: dict, commented: bool = False) -> list[str]:
    lines = [("# " if commented else "") + f"[{name}]"]
    for field, info in model.model_fields.items():
        doc = (info.description or "").strip().replace("\n", " ")
        doc = " ".join(doc.split())
        if doc:
            lines.append(f"# {doc}")
        if field in values:
            value = values[field]
        elif info.is_required():
            lines.append(f"# {field} = ...  (required)")
            continue
        else:
            value = info.get_default(call_default_factory=True)
        if value is None:
            lines.append(f"# {field} = ...  (unset by default)")
            continue
        lines.append(("# " if commented else "") + f"{field} = {toml_value(value)}")
    return lines


def render_default_toml() -> str:
    """configs/default.toml: every setting with its default and its meaning (generated; see tools/)."""
    from lagsplit.adapters import sources

    cfg = Config().model_dump(mode="json")
    out = [
        "# lagsplit: every setting, its default and what it does.",
        "# Generated from the config models by `python tools/gen_default_config.py`; do not edit by hand.",
        "# Precedence: defaults < this file < LAGSPLIT_<SECTION>__<FIELD> environment < --set section.field=value.",
        "",
    ]
    out += _section("source", sources.SyntheticSource, cfg["source"])
    for kind_model in sources.SOURCE_MODELS[1:]:
        out += ["", f"# --- or source.kind = \"{kind_model.model_fields['kind'].default}\":"]
        out += _section("source", kind_model, {"kind": kind_model.model_fields["kind"].default}, commented=True)
    for name in ("model", "train", "engine", "output", "monitor"):
        out += [""] + _section(name, type(getattr(Config(), name)), cfg[name])
    return "\n".join(out) + "\n"
