"""A batch's plan: for every plane stream of every recording, the output it writes and the
tasks that write it (one, or a chunk each with ``--split``), or why it is not run
(finished already, or the recording cannot be read)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lagsplit.adapters.stacks import StackError
from lagsplit.config import Config, load_config, toml_value

from .inputs import Stream, find_recordings, plane_streams
from .split import Chunk, chunks
from .task import Task, output_rows

PARTIAL_FOLDER = ".partial"
"""Under the output folder: outputs being written (``--resume`` continues them); a file
moves to its place only when it holds every frame."""

OUTPUT_SUFFIXES = {"h5": ".h5", "ome-zarr": ".ome.zarr"}
"""``--format``: the outputs' kind, by the name they are written under."""

BATCH_DEFAULTS = {"train": {"mode": "fixed"}, "model": {"threads": 1}, "monitor": {"mode": "off"}}
"""What a batch changes from a replay's defaults (a config file and ``--set`` still change
them): fixed training (``train.steps_per_frame`` steps after each frame) so that an output
is the same whatever else its worker ran, and one torch thread per task."""


@dataclass(frozen=True)
class BatchRequest:
    """What the user asked for: the inputs and the replay options every task shares."""

    inputs: list[str]
    out_dir: Path
    config: Path | None = None
    sets: list[str] = field(default_factory=list)
    channel: int | None = None
    z: int | None = None
    axes: str | None = None
    init: Path | None = None
    split: int = 1
    overlap: int = 128
    format: str = "h5"
    """``h5`` (NAME.h5) or ``ome-zarr`` (NAME.ome.zarr)."""

    @property
    def suffix(self) -> str:
        return OUTPUT_SUFFIXES[self.format]


@dataclass
class Job:
    """One output: its tasks (chunks with ``--split``), or the row it already has."""

    recording: str
    name: str
    final: Path
    frames: int = 0
    tasks: list[Task] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    partial: Path | None = None
    """Where the output is written until it holds every frame."""
    status: str = "todo"
    """``todo``, or ``skipped`` (the output is finished) or ``failed`` (cannot be read)."""
    error: str = ""
    done_frames: int = 0
    warmup_frames: int = 0


def _settings(values: dict) -> list[str]:
    """``{"section.field": value}`` as ``--set`` items; None values are left out."""
    return [f"{key}={toml_value(v)}" for key, v in values.items() if v is not None]


def _user_settings(req: BatchRequest) -> list[str]:
    """--init, then --set: what the user asked of every task."""
    return [*_settings({"train.init": None if req.init is None else str(req.init)}), *req.sets]


def task_config(req: BatchRequest, stream: Stream, partial: Path, start: int = 0, stop: int | None = None) -> Config:
    """The replay config of one task: batch defaults < --config < --init, --set < what the
    batch sets (the stream, its frames and the partial output, continued with --resume)."""
    own = _settings({"source.kind": "replay", "source.path": stream.recording.spec, "source.start": start,
                     "source.stop": stop, "source.channel": stream.channel, "source.z": stream.z,
                     "source.axes": req.axes, "output.path": str(partial), "output.resume": True,
                     "output.overwrite": False})
    return load_config(req.config, [*_user_settings(req), *own], base=BATCH_DEFAULTS)


def check_request(req: BatchRequest) -> Config:
    """The config every task starts from, checked once (ConfigError, ValueError)."""
    if req.split < 1:
        raise ValueError(f"--split {req.split}: give 1 or more chunks")
    if req.overlap < 0:
        raise ValueError(f"--overlap {req.overlap}: give 0 or more frames")
    if req.format not in OUTPUT_SUFFIXES:
        raise ValueError(f"--format {req.format}: give one of {', '.join(OUTPUT_SUFFIXES)}")
    if req.out_dir.exists() and not req.out_dir.is_dir():
        raise ValueError(f"--out {req.out_dir} is a file; give a folder")
    placeholder = _settings({"source.kind": "replay", "source.path": ""})
    return load_config(req.config, [*placeholder, *_user_settings(req)], base=BATCH_DEFAULTS)


def plan_batch(req: BatchRequest) -> list[Job]:
    """Every output of the batch, in input order (InputError when an input names nothing)."""
    jobs: list[Job] = []
    names: dict[str, str] = {}
    for rec in find_recordings(req.inputs):
        try:
            streams = plane_streams(rec, req.channel, req.z, req.axes)
        except StackError as exc:
            jobs.append(Job(rec.spec, rec.name, req.out_dir / f"{rec.name}{req.suffix}", status="failed",
                            error=str(exc)))
            continue
        for stream in streams:
            if stream.name in names:
                raise ValueError(f"{rec.spec} and {names[stream.name]} would both write {stream.name}{req.suffix}")
            names[stream.name] = rec.spec
            jobs.append(_job(req, stream))
    return jobs


def _job(req: BatchRequest, stream: Stream) -> Job:
    final = req.out_dir / f"{stream.name}{req.suffix}"
    recording = stream.recording.spec + "".join(
        f" ({k} {v})" for k, v in (("channel", stream.channel), ("z", stream.z)) if v is not None)
    job = Job(recording, stream.name, final, stream.frames)
    if final.exists():
        job.status = "skipped"
        try:
            job.done_frames, job.warmup_frames = output_rows(final)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            job.status, job.error = "failed", f"{final} exists and is not a lagsplit output ({exc}); move it away"
        return job
    partial = job.partial = req.out_dir / PARTIAL_FOLDER / f"{stream.name}{req.suffix}"
    n = min(req.split, job.frames)
    if n <= 1:
        job.tasks = [Task(stream.name, stream.name, task_config(req, stream, partial), partial, final, job.frames)]
        return job
    job.chunks = chunks(job.frames, n, req.overlap)
    for c in job.chunks:
        part = partial.with_name(f"{partial.stem}.chunk{c.number}of{n}.h5")
        cfg = task_config(req, stream, part, c.start, c.stop)
        job.tasks.append(Task(f"{stream.name}#{c.number}", stream.name, cfg, part, None, c.stop - c.start))
    return job
