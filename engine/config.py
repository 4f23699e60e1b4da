"""Settings of the engine's parts. Every field is a knob with its docstring;
``configs/default.toml`` mirrors these models."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Settings(BaseModel):
    """Base of every config section: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)


class ModelConfig(Settings):
    lags: tuple[int, ...] = (8, 4, 2, 1)
    """Lags in frames, longest first. The longest lag defines the slow component."""
    base_channels: int = Field(16, ge=4, le=128)
    """Channels of the first U-Net level (doubles per level)."""
    levels: int = Field(2, ge=1, le=4)
    """Downsampling levels of each lag U-Net (skip connections at every level)."""
    windows: tuple[int, ...] = (8, 32, 128)
    """Windows in frames of the causal temporal statistics (clipped means, engine/features.py)
    the slow (longest-lag) network reads: for target t, the statistic of each window of
    frames ending at t - L. Computed once per frame and kept in the ring, so training pairs
    cost nothing extra."""
    clip: float = Field(2.0, gt=0, le=20)
    """Window statistic (the clipped mean): values above median + clip x noise level are
    left out (spots), values below median - 4 x noise level too."""
    slow_skip: bool = True
    """The slow network predicts a correction to the longest-window statistic (untrained,
    it returns that plane; training learns what to add); off, it predicts slow itself."""
    gate_decay: float = Field(0.95, ge=0, lt=1)
    """With ``slow_skip``: how much of the network's correction is used is chosen among
    0, 1/4, 1/2, 3/4 and 1 by the absolute error each would have made on the frames that
    arrive after it was made (held out), summed with this decay per frame; 0 uses the
    correction unscaled. See CorrectionGate in engine/cascade.py."""
    work_size: int = Field(128, ge=0, le=8192)
    """Longest side in pixels of the grid the slow stage works on: larger frames are binned
    by the smallest integer factor that brings them within it (0: always full resolution).
    The window statistics, the change detector and the networks run on the binned frames;
    slow at full resolution is their estimate upsampled plus the fine detail of a robust
    running mean kept at full resolution (see engine/detail.py)."""
    bleach_tiles: int = Field(2, ge=0, le=64)
    """Photobleaching: each frame's brightness against the first is measured in this many
    tiles a side (a robust mean per tile, smoothed over frames, interpolated between tile
    centres) and divided out before the slow stage, then multiplied back into slow (0: off).
    See engine/bleach.py."""
    level_tiles: int = Field(2, ge=0, le=64)
    """On a faded sample, slow's level is held to the frame's in this many tiles a side: the
    robust level of frame - slow per tile (spots left out), smoothed over frames by
    ``level_alpha``, is added to slow in proportion to the tile's fade, all of it from a
    1.2-fold fade on (0: off). See engine/level.py."""
    level_alpha: float = Field(0.3, ge=0, le=1)
    """Weight of each new frame in the smoothed level of ``level_tiles`` (1: this frame's alone)."""
    change_ratio: float = Field(1.3, ge=0)
    """Sudden-change detector: when, in most of 4 x 4 tiles of the frame, the robust mean
    squared difference from the median of the 8 frames before it exceeds this multiple of
    its recent level, twice in a row, a new segment starts (0 turns the detector off).
    See engine/change.py."""
    settle: int = Field(24, ge=0, le=4096)
    """After a sudden change, frames (beyond the longest lag) during which slow is the
    longest-window statistic of the frames since the change, before the network resumes."""
    settle_blur: float = Field(3.0, ge=0, le=64)
    """While slow is the longest-window statistic (warm-up, settling), it is blurred by a
    Gaussian of min(2, settle_blur / sqrt(n)) px for a window holding n frames: few frames
    leave much noise, and a spatial average trades it for a little blur (0: no blur)."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of the networks' convolutions, in inference and in training steps:
    'bfloat16' (torch autocast: weights, their averages, the optimiser and everything
    around the networks stay float32), 'float32', or 'auto': bfloat16 where the device
    computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bfloat16), faster
    there; float32 elsewhere, where bfloat16 would be emulated and slower."""
    threads: int = Field(0, ge=0, le=256)
    """CPU threads for torch; 0: one in slack and off modes (the worker, and in slack mode
    the training thread beside it, share the cores with the source and the writer: more
    threads each wait on each other), torch's default in fixed mode, where the worker
    takes the training steps itself."""
    seed: int = 0
    """Seed for weight initialisation and training crops."""

    @field_validator("windows")
    @classmethod
    def _windows_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("at least one window is required, e.g. [8, 32, 128]")
        if any(w < 1 or w > 1024 for w in v):
            raise ValueError(f"windows must be 1..1024 frames, got {list(v)}")
        return v

    @field_validator("lags")
    @classmethod
    def _lags_descending(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("at least one lag is required, e.g. [8, 4, 2, 1]")
        if any(lag < 1 for lag in v):
            raise ValueError(f"lags must be positive frame counts, got {list(v)}")
        if list(v) != sorted(set(v), reverse=True):
            raise ValueError(f"lags must be distinct and longest first, got {list(v)}")
        return v


class TrainConfig(Settings):
    mode: Literal["slack", "fixed", "off"] = "slack"
    """'slack': train in the time before the next frame (live); 'fixed': exactly
    steps_per_frame steps after each frame (deterministic); 'off': frozen weights."""
    steps_per_frame: int = Field(1, ge=0, le=1000)
    """Training steps after each frame in fixed mode."""
    min_steps_per_frame: int = Field(1, ge=0, le=1000)
    """Slack mode: steps taken after each frame even when the next one is waiting. 0 for a
    live camera (training never makes the run fall behind); 1 or more for a replay as fast
    as possible, where the next frame is always waiting."""
    max_steps_per_frame: int = Field(8, ge=1, le=10000)
    """Slack mode: most steps between two frames."""
    warmup_steps: int = Field(100, ge=0)
    """Training steps of the slow stage before the network's slow replaces the longest
    window's statistic. Until then slack mode takes at least one step per frame, so warm-up
    ends within about this many frames after the longest lag, whatever the load."""
    batch: int = Field(8, ge=1, le=256)
    """Training pairs per step."""
    crop: int = Field(48, ge=8, le=4096)
    """Side in pixels of the random training crops (whole frame when smaller)."""
    history: int = Field(64, ge=1, le=4096)
    """Frames kept in the ring beyond the longest lag; training targets are drawn from them."""
    lr: float = Field(4e-3, gt=0, le=1.0)
    """Adam learning rate."""
    fast_loss: Literal["l1", "mse", "huber"] = "mse"
    """Loss of the shorter-lag stages."""
    stages_per_step: Literal["all", "rotate"] = "rotate"
    """'all': each step trains every lag; 'rotate': the slow stage every step and one
    shorter lag in turn (cheaper on CPU)."""
    ema: float = Field(0.95, ge=0, lt=1)
    """Inference uses an exponential moving average of the trained weights with this decay
    per step (0: the trained weights themselves)."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clip; a step whose gradient is not finite is skipped and counted."""
    diverge_ratio: float = Field(10.0, ge=0)
    """A step whose loss exceeds this multiple of the median of its stage's last 32 losses,
    where the weights before the previous step do better on the same batch, is a divergence:
    those weights are restored, the step is skipped and counted (train_skipped); inference
    only ever averages weights a later step's loss has confirmed. 0 turns the check off."""
    init: str | None = None
    """Weights file (from `lagsplit pretrain`) to start from instead of random weights."""


class RuntimeConfig(Settings):
    queue: int = Field(32, ge=1, le=100000)
    """Frames the input queue holds between the adapter and the worker."""
    overflow: Literal["block", "drop"] = "block"
    """'block': the source waits (replay, never drops); 'drop': keep up with a live
    source, dropping frames that do not fit (counted and recorded as gaps)."""
    sink_queue: int = Field(64, ge=1, le=100000)
    """Results the HDF5 writer may lag behind; a full queue back-pressures the worker."""
    sink_queue_mib: int = Field(256, ge=1, le=1 << 20)
    """... and at most this many MiB of them (raw, slow, fast: 40 MiB a frame at 2048x2048)."""
    max_latency_ms: float = Field(200.0, ge=0)
    """Bound on a live run's latency (a frame's arrival to its components out): while the
    source outruns the worker, optional work is skipped in this order until the frames
    fit again: the training steps frames wait for, the per-lag component stages, the
    previews (engine/shedding.py; the file's /frames/shed says what, per frame). 0: never
    skip. A replay as fast as possible is never bounded: its queue is full by design."""
    max_frames: int | None = Field(None, ge=1)
    """Stop after this many frames (None: until the source ends)."""


class OutputConfig(Settings):
    path: str | None = "out/lagsplit.h5"
    """HDF5 file (.h5, .hdf5) or OME-Zarr store (.ome.zarr, with the zarr extra) to write; an
    empty string writes no file."""
    dtype: Literal["float32", "float16"] = "float32"
    """Storage type of the components."""
    raw: bool = True
    """Also store the input frames (/raw, input dtype)."""
    components: bool = False
    """Also store per-lag components and the residual (/components/...)."""
    compression: Literal["none", "lzf", "gzip", "blosc-lz4"] = "none"
    """Chunk compression; blosc-lz4 in an HDF5 file needs the hdf5plugin package. An OME-Zarr
    store takes none, gzip or blosc-lz4 (lzf is HDF5's only)."""
    direct_io: bool = True
    """An OME-Zarr store's image chunks are written with O_DIRECT, straight to the disk past
    the page cache (where the file system takes it; else as ordinary writes). HDF5 files are
    written through the page cache."""
    flush_every: int = Field(10, ge=1)
    """Flush to disk (visible to SWMR readers, survives a kill) every N frames."""
    flush_seconds: float = Field(1.0, gt=0)
    """... or at least this often, in seconds."""
    overwrite: bool = False
    """Replace an existing file of the same name (--overwrite); false: an existing
    output is refused before the run starts."""
    resume: bool = False
    """Continue an existing file after its last frame (--resume), from its newest model
    checkpoint; a file that does not exist yet is started. Refused when the file was
    written with other shape, dtype, lags or network settings."""
    checkpoint_every: int = Field(200, ge=0)
    """Save the model beside the file (FILE.ckpt.pt, replaced atomically) every N frames
    and at the end, for --resume; 0: at the end only."""


class MonitorConfig(Settings):
    mode: Literal["auto", "live", "log", "off"] = "auto"
    """'auto': rich Live on a terminal, plain log lines otherwise."""
    refresh_hz: float = Field(4.0, gt=0, le=60)
    """Live display refreshes per second."""
    log_every_s: float = Field(5.0, gt=0)
    """Seconds between plain log lines when not on a terminal."""
    preview_width: int = Field(24, ge=8, le=120)
    """Width in characters of each live preview image."""
