"""Source settings (the ``[source]`` section) and building an adapter from them.

Each adapter has a settings model whose ``kind`` selects it. To add an adapter:
a model here with a new ``kind``, an entry in ``SourceConfig`` and in ``build_adapter``.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from engine.config import Settings
from engine.contracts import Adapter


class SyntheticSource(Settings):
    kind: Literal["synthetic"] = "synthetic"
    scene: str = "filaments"
    """Generated scene (with ground truth); see adapters.synthetic.SCENES."""
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


SOURCE_MODELS: tuple[type[Settings], ...] = (SyntheticSource, ReplaySource)
SourceConfig = Annotated[Union[SOURCE_MODELS], Field(discriminator="kind")]  # type: ignore[valid-type]
SOURCE_KINDS = tuple(m.model_fields["kind"].default for m in SOURCE_MODELS)


def build_adapter(cfg: Settings) -> Adapter:
    """The adapter a source section describes (files are opened and checked here)."""
    if isinstance(cfg, SyntheticSource):
        from .synthetic import SyntheticAdapter

        return SyntheticAdapter(cfg.scene, frames=cfg.frames, size=cfg.size, seed=cfg.seed, fps=cfg.fps)
    if isinstance(cfg, ReplaySource):
        from .replay import ReplayAdapter

        return ReplayAdapter(cfg.path, fps=cfg.fps, start=cfg.start, stop=cfg.stop)
    raise ValueError(f"no adapter for source kind {getattr(cfg, 'kind', cfg)!r}")
