"""Source settings (the ``[source]`` section) and building an adapter from them.

Each adapter has a settings model whose ``kind`` selects it. To add an adapter:
a model here with a new ``kind``, an entry in ``SourceConfig`` and in ``build_adapter``.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from lagsplit.engine.config import Settings
from lagsplit.engine.contracts import Adapter


class SyntheticSource(Settings):
    kind: Literal["synthetic"] = "synthetic"
    scene: str = "filaments"
    """Generated scene (with ground truth); see adapters.scenes.SCENES."""
    frames: int = Field(300, ge=1)
    """Frames to generate."""
    size: int = Field(128, ge=16, le=4096)
    """Frame side in pixels."""
    seed: int = 0
    """Seed of the scene generator."""
    fps: float = Field(0.0, ge=0)
    """Frames per second to play at; 0 plays as fast as the engine takes them."""


class ReplaySource(Settings):
    kind: Literal["replay"] = "replay"
    path: str
    """TIFF / OME-TIFF stack, .npy array, or HDF5 dataset as FILE.h5:/path."""
    fps: float = Field(0.0, ge=0)
    """Frames per second to play at (a live stream); 0 plays as fast as possible."""
    start: int = Field(0, ge=0)
    """First frame of the stack to play."""
    stop: int | None = Field(None, ge=1)
    """Play up to (not including) this frame; None plays to the end."""
    channel: int | None = Field(None, ge=0)
    """Channel to play (0-based) of a stack with channels (C axis, or colour samples);
    a stack with several channels is refused until one is picked."""
    z: int | None = Field(None, ge=0)
    """Z-plane to play (0-based) of a stack with z-planes; a stack with several
    z-planes is refused until one is picked."""
    axes: str | None = None
    """The stack's axes, outermost first (letters T, Z, C, S, Y, X), replacing what its
    metadata says: e.g. "TYX" for a time-lapse ImageJ saved as z-slices. None: the
    file's ImageJ / OME axes; an array without them (.npy, HDF5) is (T, Y, X), or
    (T, C, Y, X) with channel, (T, Z, Y, X) with z, (T, Z, C, Y, X) with both."""

    @field_validator("axes")
    @classmethod
    def _axes_letters(cls, v: str | None) -> str | None:
        from .stacks import check_axes

        return None if v is None else check_axes(v)


class WatchSource(Settings):
    kind: Literal["watch"] = "watch"
    path: str
    """Folder the acquisition software writes one image file per frame into."""
    glob: str = "*.tif*"
    """File names to take (shell pattern); others (metadata, notes) are ignored."""
    frame_pattern: str | None = None
    """Regular expression finding the frame number in a file name (group 'frame' or the
    first group). None: the number after a t/time tag (00017_t0017.tif,
    img_..._time000000017_z000.tif), the frame of img_000000017_DAPI_000.tif, else
    the last number in the name."""
    poll: bool = False
    """Poll the folder instead of inotify events (network shares: SMB, NFS)."""
    poll_interval_s: float = Field(0.5, gt=0, le=60)
    """Seconds between two looks at the folder when polling."""
    settle_s: float = Field(0.25, ge=0, le=60)
    """A file not seen closed counts as complete once its size and mtime have not
    changed for this many seconds (and it parses)."""
    give_up_s: float = Field(5.0, gt=0, le=3600)
    """A file still unreadable this many seconds after it last changed is skipped,
    counted as rejected and logged with its name."""
    reorder_s: float = Field(1.0, ge=0, le=600)
    """Seconds a frame waits for a lower-numbered file that has not appeared; after
    that the missing number is recorded as a gap."""
    idle_timeout_s: float | None = Field(None, gt=0)
    """End the run after this many seconds without a new file; None: run until
    Ctrl-C or the end marker."""
    end_marker: str | None = None
    """End the run when a file of this name appears in the folder (e.g. "END");
    None: no marker."""
    existing: bool = True
    """Take the files already in the folder at start first; false: only new files."""
    gone_timeout_s: float | None = Field(None, gt=0)
    """The watched folder deleted while the run goes on: end the run after this many seconds
    without it; None: wait for it to come back, then follow it again (either way the log says so)."""

    @field_validator("frame_pattern")
    @classmethod
    def _pattern_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return v


class ZmqSource(Settings):
    kind: Literal["zmq"] = "zmq"
    endpoint: str
    """ZeroMQ endpoint: tcp://HOST:PORT connects to a sender, tcp://*:PORT binds and
    lets senders connect; ipc://PATH works too."""
    socket: Literal["pull", "sub"] = "pull"
    """'pull': lossless, the sender waits when the engine falls behind; 'sub': take
    what a PUB sender broadcasts (a slow receiver loses frames, recorded as gaps)."""
    bind: bool | None = None
    """Bind (true) or connect (false); None: bind a wildcard address (tcp://*:PORT),
    connect otherwise."""
    idle_timeout_s: float | None = Field(None, gt=0)
    """End the run after this many seconds without a message; None: wait for the
    end message (or Ctrl-C)."""
    rcvhwm: int = Field(1000, ge=1)
    """Messages ZeroMQ may queue on the receiving side (its high-water mark)."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint_form(cls, v: str) -> str:
        from .zmq_source import check_endpoint

        return check_endpoint(v)


SOURCE_MODELS: tuple[type[Settings], ...] = (SyntheticSource, ReplaySource, WatchSource, ZmqSource)
SourceConfig = Annotated[Union[SOURCE_MODELS], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007 (a tuple of types)
SOURCE_KINDS = tuple(m.model_fields["kind"].default for m in SOURCE_MODELS)


def build_adapter(cfg: Settings) -> Adapter:
    """The adapter a source section describes (files are opened and checked here)."""
    if isinstance(cfg, SyntheticSource):
        from .synthetic import SyntheticAdapter

        return SyntheticAdapter(cfg.scene, frames=cfg.frames, size=cfg.size, seed=cfg.seed, fps=cfg.fps)
    if isinstance(cfg, ReplaySource):
        from .replay import ReplayAdapter

        return ReplayAdapter(cfg.path, fps=cfg.fps, start=cfg.start, stop=cfg.stop, channel=cfg.channel, z=cfg.z,
                             axes=cfg.axes)
    if isinstance(cfg, WatchSource):
        from .watch import WatchAdapter

        return WatchAdapter(
            cfg.path, glob=cfg.glob, frame_pattern=cfg.frame_pattern, poll=cfg.poll,
            poll_interval_s=cfg.poll_interval_s, settle_s=cfg.settle_s, give_up_s=cfg.give_up_s,
            reorder_s=cfg.reorder_s, idle_timeout_s=cfg.idle_timeout_s, end_marker=cfg.end_marker,
            existing=cfg.existing, gone_timeout_s=cfg.gone_timeout_s,
        )
    if isinstance(cfg, ZmqSource):
        from .zmq_source import ZmqAdapter

        return ZmqAdapter(cfg.endpoint, socket=cfg.socket, bind=cfg.bind, idle_timeout_s=cfg.idle_timeout_s,
                          rcvhwm=cfg.rcvhwm)
    raise ValueError(f"no adapter for source kind {getattr(cfg, 'kind', cfg)!r}")
