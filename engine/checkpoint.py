"""Model checkpoints for ``--resume``: everything the networks learnt during a run, saved
beside its HDF5 file (``FILE.ckpt.pt``) every ``output.checkpoint_every`` frames and at the
end, so that a run that crashed or was stopped continues with what it had learnt.

A checkpoint is a weights file as ``Cascade.state()`` writes it (so ``Cascade.load`` checks
that its network settings fit the run), plus what only a continuing run needs: the weights
being trained (inference reads their average), the optimiser state, the normaliser fitted
on the stream's first frame, the correction gate, the step counts, and the ``run_id`` of
the HDF5 file it belongs to. It is written to a temporary file, flushed to disk and renamed
over the previous one, so a crash while saving leaves the previous checkpoint whole.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .cascade import Cascade, Normaliser
from .trainer import OnlineTrainer

log = logging.getLogger("lagsplit.checkpoint")
SUFFIX = ".ckpt.pt"


def checkpoint_path(output: str | os.PathLike) -> Path:
    """Where the checkpoint of the HDF5 file ``output`` lives: ``output`` + ``.ckpt.pt``."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


class UnusableCheckpoint(ValueError):
    """The checkpoint beside a file cannot be read, or belongs to another run than the file
    (an earlier file of the same name): the networks start afresh."""


@dataclass(frozen=True)
class Restored:
    """What a checkpoint gave back: the training steps taken and the last frame number
    processed when it was saved."""

    path: Path
    model_version: int
    last_index: int | None


def save_checkpoint(path: str | os.PathLike, cascade: Cascade, trainer: OnlineTrainer, *, run_id: str,
                    last_index: int | None) -> None:
    """Write the checkpoint atomically: a temporary file beside ``path``, fsynced, renamed over
    it. The model is copied under the trainer's ``weights_lock`` (a training thread's step
    is either all in it or not at all), and written after the lock is let go."""
    path = Path(path)
    with trainer.weights_lock:
        state = copy.deepcopy(_state(cascade, trainer, run_id, last_index))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _state(cascade: Cascade, trainer: OnlineTrainer, run_id: str, last_index: int | None) -> dict:
    """What a checkpoint holds (tensors shared with the model, not copies)."""
    state = cascade.state()
    state.update({
        "kind": "lagsplit checkpoint",
        "run_id": run_id,
        "last_index": last_index,
        "train_nets": [n.state_dict() for n in cascade.nets],
        "optimisers": [o.state_dict() for o in trainer.opts],
        "gate": None if cascade.gate is None else {"loss": cascade.gate.loss.tolist(), "value": cascade.gate.value},
        "version": trainer.version,
        "skipped": trainer.skipped,
    })
    return state


def load_checkpoint(path: str | os.PathLike, cascade: Cascade, trainer: OnlineTrainer, *, run_id: str) -> Restored:
    """Continue from the checkpoint at ``path``: ValueError naming the setting when its
    networks do not fit this run (``Cascade.load``); UnusableCheckpoint when it cannot be
    read or belongs to another file (its ``run_id``). Nothing is changed unless everything
    fits."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=cascade.device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a file it cannot read
        raise UnusableCheckpoint(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("kind") != "lagsplit checkpoint":
        raise UnusableCheckpoint(f"{path} is not a lagsplit checkpoint")
    if state.get("run_id") != run_id:
        raise UnusableCheckpoint(f"{path} belongs to another run than the file it sits beside (run_id "
                         f"{state.get('run_id')!r}, the file's {run_id!r})")
    if len(state["optimisers"]) != len(trainer.opts):
        raise ValueError(f"{path} holds {len(state['optimisers'])} optimisers, this run has {len(trainer.opts)}")
    cascade.load(str(path))  # checks the network settings and shapes, loads the averaged weights
    for net, sd in zip(cascade.nets, state["train_nets"], strict=True):
        net.load_state_dict(sd)
    for opt, sd in zip(trainer.opts, state["optimisers"], strict=True):
        opt.load_state_dict(sd)
    cascade.norm = Normaliser(**state["norm"])  # the same stream: keep its units
    if cascade.gate is not None and state.get("gate"):
        cascade.gate.loss = torch.tensor(state["gate"]["loss"], dtype=torch.float64, device=cascade.gate.gains.device)
        cascade.gate.value = float(state["gate"]["value"])
    trainer.version = int(state["version"])
    trainer.skipped = int(state.get("skipped", 0))
    return Restored(path, trainer.version, state.get("last_index"))


class Checkpointer:
    """Saves a run's checkpoint every ``every`` processed frames (0: never in between) and at
    the end. The engine calls ``after_frame`` from its worker and ``final`` once training has
    stopped; a failure to save is logged and the run goes on (the file matters more)."""

    def __init__(self, path: str | os.PathLike, cascade: Cascade, trainer: OnlineTrainer, every: int, run_id: str) -> None:
        self.path = Path(path)
        self.cascade, self.trainer = cascade, trainer
        self.every = every
        self.run_id = run_id
        self.saved = 0  # checkpoints written
        self.failed = 0  # checkpoints that could not be written

    def after_frame(self, processed: int, last_index: int | None) -> None:
        if self.every and processed % self.every == 0:
            self._save(last_index)

    def final(self, last_index: int | None) -> None:
        if last_index is not None:
            self._save(last_index)

    def _save(self, last_index: int | None) -> None:
        try:
            save_checkpoint(self.path, self.cascade, self.trainer, run_id=self.run_id, last_index=last_index)
            self.saved += 1
        except Exception as exc:  # noqa: BLE001 - a checkpoint is a convenience; the HDF5 file is the result
            self.failed += 1
            log.error("saving the checkpoint %s failed: %s", self.path, exc)


__all__ = ["Checkpointer", "Restored", "UnusableCheckpoint", "checkpoint_path", "load_checkpoint", "save_checkpoint"]
