"""``lagsplit pretrain STACK --out WEIGHTS.pt``: train the cascade on a recorded stack,
offline, and save weights that a live run starts from (``--init WEIGHTS`` or
``train.init``), so that it is useful from its first frames instead of after warm-up.

The stack is streamed through the same engine, cascade and trainer a live run uses
(fixed mode, ``steps`` per frame), ``passes`` times; between passes the ring is
emptied so no training pair spans the end and the start of the stack.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lagsplit.adapters.replay import ReplayAdapter
from lagsplit.adapters.stacks import split_h5_path
from lagsplit.engine.engine import Engine

from .app import build_model, refuse_input_as_output
from .config import Config


@dataclass
class PretrainResult:
    path: Path
    frames: int
    steps: int
    seconds: float
    loss: list[float]


def pretrain(cfg: Config, stack: str, out: str | Path, steps: int = 4, passes: int = 1,
             log: Callable[[str], None] = lambda s: None, channel: int | None = None, z: int | None = None,
             axes: str | None = None) -> PretrainResult:
    """Train on ``stack`` (``channel`` / ``z`` / ``axes`` pick its plane, as for a replay) and
    save the weights to ``out``. ``cfg``'s model section fixes the network shape (a run that
    loads the weights must use the same); ``train.init`` continues from earlier weights.
    An ``out`` that is the stack itself is refused before anything is read."""
    refuse_input_as_output(out, [split_h5_path(str(stack))[0]])
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"mode": "fixed", "steps_per_frame": steps})})
    cascade, trainer = build_model(cfg)
    frames = 0
    t0 = time.perf_counter()
    for p in range(passes):
        if p:
            cascade.restart_stream()
        adapter = ReplayAdapter(stack, channel=channel, z=z, axes=axes)
        engine = Engine(adapter, cascade, trainer, [], runtime=cfg.engine, source=adapter.name)
        status = engine.run()
        if status.error:
            raise RuntimeError(f"pretraining failed: {status.error}")
        frames += status.processed
        loss = ", ".join(f"{v:.4f}" for v in trainer.last_loss)
        log(f"pass {p + 1}/{passes}: {status.processed} frames, {trainer.version} steps, loss per lag [{loss}]")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cascade.save(str(out))
    return PretrainResult(out, frames, trainer.version, time.perf_counter() - t0, list(trainer.last_loss))
