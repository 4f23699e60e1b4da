"""The greedy residual cascade of lag autoencoders (docs/design.md, "The method").

    slow_t = g_8(statistics of the frames up to t-8);  r1_t = x_t - slow_t
    C_4(t) = g_4(r1_{t-4}); r2_t = r1_t - C_4(t)   ... and so on down the lags
    fast_t = x_t - slow_t;  residual_t = x_t - sum_L C_L(t)

Each stage reads its inputs from the ring (channel k holds what stage k sees), so
training pairs for every stage come from the same preallocated storage. The stages work
on the frame binned to ``model.work_size`` (engine/detail.py); slow comes back to full
resolution with the fine detail of a robust running mean. The shorter-lag stages only
feed the per-lag components: they run, and train, only when those are asked for.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .bleach import BleachGain
from .change import ChangeDetector
from .config import ModelConfig
from .detail import FineDetail, bin_factor, bin_frame, upsample
from .features import TemporalFeatures
from .level import LevelMatch
from .nets import LagUNet, predict, resolve_precision
from .ring import Ring
from .warmup import WarmupChoice


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device = {name!r} but no CUDA device is available (use 'auto' or 'cpu')")
    return dev


@dataclass
class Normaliser:
    """Maps ADU to the networks' units: (x - offset) / scale, fixed after the first frame
    so weights trained on one frame stay valid for the next."""

    offset: float = 0.0
    scale: float = 1.0
    fitted: bool = False

    def fit(self, x: torch.Tensor) -> None:
        finite = x[torch.isfinite(x)]
        if finite.numel() == 0:
            return
        self.offset = float(finite.median())
        std = float(finite.std()) if finite.numel() > 1 else 0.0
        self.scale = std if std > 1e-6 else max(abs(self.offset), 1.0)
        self.fitted = True


@dataclass
class StageOutput:
    """Result of one frame through the cascade (full-resolution tensors on the device).
    ``slow`` is in ADU, the fading multiplied back in. ``components`` holds slow, then one
    plane per shorter lag when the components were asked for (else nothing); those planes
    are in normalised units with the fading divided out: ``gain`` (the fading of each
    pixel) multiplies it back in (:meth:`Cascade.to_adu` does). ``residual`` is None
    without them."""

    position: int
    slow: torch.Tensor
    components: list[torch.Tensor]
    residual: torch.Tensor | None
    warmup: bool
    gain: torch.Tensor | None = None  # the fading of this frame (engine/bleach.py), None when off
    gate: torch.Tensor | None = None  # the share of the network's correction in slow (0-d); None: no network used


class CorrectionGate:
    """How much of the slow network's correction to the longest window's statistic to use.

    Each frame t arrives after its slow was predicted from frames up to t - L, so it is
    held-out data for that prediction. The gate scores the statistic plus g times the
    network's correction, for g in 0, 1/4, ... 1, by the absolute error against each new
    frame (summed with ``decay`` per frame), and uses the best g. The absolute error is
    what the median minimises: it ignores spots that occupy a pixel part of the time, so
    a correction that only adds back where spots tend to be, or only adds noise (a static
    sample, where the long window is already the best estimate), is turned down; one that
    follows real change (drift, bleaching) is kept. g for frame t comes from the frames
    before it.
    """

    GAINS = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.loss = torch.zeros(len(self.GAINS), dtype=torch.float64)
        self.gains = torch.tensor(self.GAINS)
        # the gain in use, a 0-d tensor that stays on the frames' device: choosing it needs
        # no copy to the host (no synchronisation with a GPU) frame after frame
        self._value = self.gains[0]

    @property
    def value(self) -> float:
        """The gain in use (read from the device: checkpoints, not the per-frame path)."""
        return float(self._value)

    @property
    def current(self) -> torch.Tensor:
        """The gain in use, as the 0-d tensor on the frames' device (no copy to the host)."""
        return self._value

    @value.setter
    def value(self, v: float) -> None:
        self._value = torch.tensor(float(v), device=self.gains.device)

    def apply(self, base: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        corr = predicted - base
        if self.gains.device != corr.device:  # the first frame on this device
            self.loss, self.gains, self._value = (t.to(corr.device) for t in (self.loss, self.gains, self._value))
        out = base + self._value * corr
        gains = self.gains.reshape(-1, 1, 1)
        errors = ((target - base)[None] - gains * corr[None]).abs().mean(dim=(1, 2)).double()
        self.loss = self.decay * self.loss + errors
        self._value = self.gains.index_select(0, self.loss.argmin().reshape(1)).reshape(())
        return out


_WHOLE = torch.ones(())  # the share of the network in slow where no gate scales it


class Cascade:
    """Owns the lag networks, the ring and the normaliser; turns frames into components.

    ``components``: also run (and train) the shorter-lag stages, whose only product is the
    per-lag components; off, the slow stage alone runs.
    """

    def __init__(self, cfg: ModelConfig, history: int, warmup_steps: int, device: torch.device | None = None,
                 components: bool = False) -> None:
        self.cfg = cfg
        self.lags = tuple(cfg.lags)
        self.device = device if device is not None else resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)  # what the networks compute in
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.stages = len(self.lags) if components else 1  # the stages that run
        self.span = max(self.lags)
        # + 1: the frame that leaves the longest window is still there when the next one arrives
        capacity = max(self.span + history + 1, max(cfg.windows) + 1)
        # channels: the (binned) frame, the residual each shorter-lag stage sees, then the
        # slow stage's temporal features (windowed statistics), written once when a frame arrives
        n_feat = len(cfg.windows)
        self.ring = Ring(capacity, channels=len(self.lags) + n_feat, device=self.device)
        self.features = TemporalFeatures(self.ring, len(self.lags), cfg.windows, cfg.clip)
        self.detector = ChangeDetector(self.ring, cfg.change_ratio)
        self.early = WarmupChoice(self.features, cfg.settle_blur, max(self.lags))
        self.changes: list[int] = []  # stream positions where a sudden change started a segment
        self.settle_until = 0  # slow comes from the statistic since the change before this position
        torch.manual_seed(cfg.seed)
        # the slow network reads the window statistics (which leave spots out) and, with
        # slow_skip, predicts a correction to the longest one
        skip = self.features.longest() if cfg.slow_skip else None
        self.nets = [LagUNet(n_feat if k == 0 else 1, cfg.base_channels, cfg.levels,
                             skip_channel=skip if k == 0 else None).to(self.device)
                     for k in range(len(self.lags))]
        self.gate = CorrectionGate(cfg.gate_decay) if cfg.gate_decay > 0 and cfg.slow_skip else None
        self.infer_nets: list[LagUNet] | None = None  # averaged copies the trainer keeps, if any
        self.norm = Normaliser()
        self.warmup_steps = warmup_steps
        self.stage_steps = [0] * len(self.lags)  # training steps taken per stage
        self.lock = threading.Lock()  # held while the ring changes; a training thread samples under it
        self.factor = 1  # binning of the frames into the working grid, set by the first frame
        self.shape: tuple[int, int] | None = None  # the frames' (H, W), set by the first frame
        self.fine: FineDetail | None = None  # full-resolution detail when frames are binned
        self._pinned_in: torch.Tensor | None = None  # host staging buffer of a CUDA run
        self._copied: torch.cuda.Event | None = None  # recorded after the last copy out of it
        self.bleach = BleachGain(cfg.bleach_tiles)
        self.level = LevelMatch(cfg.level_tiles, cfg.level_alpha)
        self._gain: torch.Tensor | None = None  # the last frame's fading on the working grid
        # seconds the last frame spent on the shorter-lag stages (their networks, and their
        # planes brought to the frames' resolution and units), read with ``clock``: the
        # engine's measure of what shedding them saves (engine/shedding.py)
        self.clock: Callable[[], float] = time.perf_counter
        self.stage_seconds = 0.0

    # ---- geometry ---------------------------------------------------------------------------
    def input_positions(self, stage: int, targets: torch.Tensor) -> torch.Tensor:
        """Ring position feeding stage ``stage`` for each target position -> (B, 1)."""
        return targets.reshape(-1, 1) - self.lags[stage]

    def first_target(self, stage: int) -> int:
        """Earliest target position whose input for this stage is in the ring."""
        span = self.lags[stage]
        return max(span, self.ring.oldest() + span)

    def stage_inputs(self, stage: int, targets: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) network input for each target position."""
        pos = self.input_positions(stage, targets)
        if stage > 0:
            return self.ring.gather(stage, pos)
        last = pos[:, 0]
        return torch.stack([self.ring.gather(self.features.first + j, last) for j in range(self.features.count)], 1)

    def frame_inputs(self, stage: int, pos: int) -> torch.Tensor:
        """(1, C, H, W) network input of stage ``stage`` for the frame at ``pos``, as
        :meth:`stage_inputs` gives it, but as a view into the ring: no index tensor goes to
        the device (on a GPU, a copy the host would wait for), nothing is copied."""
        slot = (pos - self.lags[stage]) % self.ring.capacity
        if stage > 0:
            return self.ring.data[stage, slot][None, None]
        first = self.features.first
        return self.ring.data[first : first + self.features.count, slot][None]

    @property
    def warm(self) -> bool:
        """True once the slow stage has trained enough to replace the longest window's statistic."""
        return self.stage_steps[0] >= self.warmup_steps

    # ---- inference --------------------------------------------------------------------------
    def _allocate(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.factor = bin_factor(shape, self.cfg.work_size)
        work = (-(-shape[0] // self.factor), -(-shape[1] // self.factor))
        self.ring.allocate(work)
        self.fine = FineDetail(self.factor, max(self.cfg.windows)) if self.factor > 1 else None

    @torch.no_grad()
    def infer(self, frame: torch.Tensor, valid: bool = True, stages: bool = True) -> StageOutput:
        """Push one (H, W) frame in ADU (float32, on the device) and decompose it.
        ``stages`` False skips the shorter-lag networks for this frame (the engine sheds
        them to hold its latency bound): their components are zero, and the ring gets
        the residuals as before those networks had trained.

        The lock is held only while the ring changes (the frame, its statistics, a new
        segment; with the components, their residuals): a training thread samples under
        it, and trains while the slow network runs here, since only this thread writes."""
        with self.lock:
            pos, xw, y, gain_full = self._push(frame, valid)
        return self._decompose(pos, xw, y, gain_full, valid, stages)

    def _push(self, frame: torch.Tensor, valid: bool) -> tuple:
        if self.ring.data is None:
            self._allocate(tuple(frame.shape))  # type: ignore[arg-type]
        if not self.norm.fitted:
            self.norm.fit(frame)
        if not valid:
            frame = torch.nan_to_num(frame, nan=0.0, posinf=0.0, neginf=0.0)
        off, scale = self.norm.offset, self.norm.scale
        xw = bin_frame(frame, self.factor)  # ADU on the working grid
        gain_full = None
        if self.bleach.enabled:
            # the fading divided out (engine/bleach.py); an invalid frame keeps the last gain,
            # and before the first valid frame (the reference: a blank or saturated frame
            # would pin every gain at its clamp) there is no fading yet
            if valid:
                self._gain = self.bleach.gain(xw)
            if self._gain is not None:
                xw = xw / self._gain
                gain_full = self._gain if self.fine is None else self.bleach.map(self.shape)
        xw = (xw - off) / scale
        # the fine detail's input: the full-resolution frame in ADU, the fading divided out
        y = None
        if self.fine is not None:
            y = frame / gain_full if gain_full is not None else frame
        pos = self.ring.push(xw, valid)
        start = self.detector.observe(pos)
        if start is not None:
            self._new_segment(start, pos)
        else:
            self.features.update(pos)
        self.detector.launch(pos)
        return pos, xw, y, gain_full

    def _decompose(self, pos: int, xw: torch.Tensor, y: torch.Tensor | None, gain_full: torch.Tensor | None,
                   valid: bool, stages: bool = True) -> StageOutput:
        if self.fine is not None and valid:
            self.fine.update(y, self.features.noise(), self.norm.scale)
        use_net = self.warm and pos >= self.first_target(0) and pos >= self.settle_until
        gate = None
        nets = self.infer_nets or self.nets
        if use_net:
            self.early.skip()
            inputs = self.frame_inputs(0, pos)
            slow = self._run(nets[0], inputs)
            gate = _WHOLE  # without a gate, all of the network's slow is used
            if self.gate is not None:
                gate = self.gate.current  # the share this frame's slow uses (apply moves on to the next)
                slow = self.gate.apply(inputs[0, nets[0].skip_channel], slow, xw)
        else:
            # warm-up, or settling after a sudden change: the best of a few simple causal
            # estimates of the frames up to this one, within the segment (engine/warmup.py)
            slow = self.early.plane(pos, xw, valid)
        shift = self.level.offset(xw, slow, self._gain, valid) if self._gain is not None else None
        if shift is not None:
            slow = slow + shift
        comps = [slow]
        r = xw - slow
        t0 = self.clock()
        with self.lock if self.stages > 1 else contextlib.nullcontext():  # the residuals go into the ring
            for k in range(1, self.stages):
                self.ring.write(k, pos, r)
                if stages and use_net and pos >= self.first_target(k) and self.stage_steps[k] > 0:
                    c = self._run(nets[k], self.frame_inputs(k, pos))
                else:
                    c = torch.zeros_like(r)
                comps.append(c)
                r = r - c
        t1 = self.clock()
        slow_full = self._slow_in_adu(slow, gain_full)
        t2 = self.clock()
        comps_full = [slow_full, *(self._up(c) for c in comps[1:])] if self.stages > 1 else []
        self.stage_seconds = (t1 - t0) + (self.clock() - t2)
        return StageOutput(pos, slow_full, comps_full, None, warmup=not use_net, gain=gain_full, gate=gate)

    def _run(self, net: LagUNet, inputs: torch.Tensor) -> torch.Tensor:
        """One network on one frame's inputs (1, C, H, W), in ``self.precision`` -> (H, W) float32."""
        return predict(net, inputs, self.precision)[0, 0]

    def _slow_in_adu(self, slow: torch.Tensor, gain: torch.Tensor | None) -> torch.Tensor:
        """Slow at the frames' resolution in ADU, the fading multiplied back in. With the
        fine detail (engine/detail.py): up(slow) + M - up(bin(M)), computed as
        up(slow - bin(M)) + M, all in ADU: one upsampling, with M and the fading applied
        as it writes the full-resolution plane."""
        base = slow * self.norm.scale + self.norm.offset
        if self.fine is None or not self.fine.n:
            return upsample(base, self.factor, self.shape, mul=gain)
        mean = self.fine.mean
        return upsample(base - bin_frame(mean, self.factor), self.factor, self.shape, add=mean, mul=gain)

    def _up(self, plane: torch.Tensor) -> torch.Tensor:
        """A working-grid plane at the frames' resolution."""
        return upsample(plane, self.factor, self.shape)

    def _new_segment(self, start: int, pos: int) -> None:
        """A sudden change began at ``start``: windows and training pairs start afresh there,
        and slow is the longest window's statistic until the network's inputs are past it."""
        self.ring.start_segment(start)
        for p in range(start, pos + 1):
            self.features.update(p)
        if self.fine is not None:
            self.fine.restart()
        self.changes.append(start)
        self.early.restart()
        self.settle_until = start + max(self.lags) + self.cfg.settle

    @torch.no_grad()
    def set_fading_reference(self, frame: torch.Tensor) -> None:
        """Take ``frame`` (a stream's first, in ADU on the device) as the fading's reference,
        as pushing it first would, without pushing it (a resume primes the ring with the
        frames its file ends with, after the first)."""
        if self.ring.data is None:
            self._allocate(tuple(frame.shape))  # type: ignore[arg-type]
        if self.bleach.enabled:
            self.bleach.gain(bin_frame(frame, self.factor))

    def upload(self, arr: np.ndarray) -> tuple[torch.Tensor, bool]:
        """One frame onto the compute device as float32 ADU, and whether every pixel is
        finite (checked on the host: integer camera frames always are). On CUDA the frame
        goes through a pinned host buffer with a non-blocking copy, so the transfer does not
        stall the host."""
        valid = True if arr.dtype.kind in "iub" else bool(np.isfinite(arr).all())
        if self.device.type != "cuda":
            return torch.from_numpy(arr.astype(np.float32, copy=False)), valid
        if self._pinned_in is None or tuple(self._pinned_in.shape) != arr.shape:
            self._pinned_in = torch.empty(arr.shape, dtype=torch.float32, pin_memory=True)
        elif self._copied is not None:
            # the buffer is refilled only once the previous frame's copy out of it is done:
            # long done when that frame's results were read back (the engine), not when
            # frames are uploaded back to back (a resume priming the ring)
            self._copied.synchronize()
        np.copyto(self._pinned_in.numpy(), arr, casting="unsafe")
        frame = self._pinned_in.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return frame, valid

    def to_adu(self, out: StageOutput, raw: np.ndarray, components: bool) -> tuple:
        """Denormalise to the input's units: (slow, fast, components dict | None, residual | None).

        ``fast`` is computed as raw - slow in float32 so slow + fast == raw exactly up to rounding.
        """
        s = self.norm.scale
        g = out.gain if out.gain is not None else 1.0
        slow = out.slow.float().cpu().numpy()
        fast = np.subtract(raw, slow, dtype=np.float32)  # raw converted as it is read: one pass
        if not components or not out.components:
            return slow, fast, None, None
        t0 = self.clock()
        rawf = raw.astype(np.float32, copy=False)
        comps = {lag: (c * s * g).float().cpu().numpy() for lag, c in zip(self.lags[1:], out.components[1:])}
        comps = {self.lags[0]: slow, **comps}
        residual = rawf - sum(comps.values())
        self.stage_seconds += self.clock() - t0
        return slow, fast, comps, residual

    def restart_stream(self) -> None:
        """Forget the frames held (a new stream, or another pass over a stack); weights,
        normaliser and training counts stay. The ring's storage is kept, not reallocated."""
        with self.lock:
            self.ring.clear()
        self.features.reset()
        self.detector.reset()
        self.early.restart()
        if self.fine is not None:
            self.fine.restart()
        self.bleach.restart()
        self.level.restart()
        self._gain = None
        if self.gate is not None:
            self.gate = CorrectionGate(self.gate.decay)
        self.settle_until = 0

    # ---- weights ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "lags": list(self.lags),
            "model": self.cfg.model_dump(mode="json"),
            "norm": {"offset": self.norm.offset, "scale": self.norm.scale, "fitted": self.norm.fitted},
            "nets": [n.state_dict() for n in (self.infer_nets or self.nets)],  # the weights inference uses
            "stage_steps": list(self.stage_steps),
        }

    def save(self, path: str) -> None:
        torch.save(self.state(), path)

    def load(self, path: str) -> None:
        """Start from saved weights (``lagsplit pretrain``). Every model setting that changes
        what the networks compute (``NETWORK_SETTINGS``) must match this run's; a file that is
        not such a weights file is refused with a ValueError naming it. Nothing is changed
        unless every network's weights fit."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"weights file {path} does not exist") from None
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a file it cannot read
            raise ValueError(f"cannot read weights file {path}: not a file written by `lagsplit pretrain` "
                             f"(truncated, or another format; {type(exc).__name__})") from exc
        missing = [k for k in ("lags", "model", "nets", "stage_steps") if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"weights file {path} lacks {', '.join(missing)}: not a file written by `lagsplit pretrain`")
        differs = network_mismatch(state["model"], self.cfg)
        if differs is not None:
            key, saved, mine = differs
            raise ValueError(f"weights in {path} have model.{key} = {saved!r}, this run uses {mine!r}")
        nets, steps = state["nets"], list(state["stage_steps"])
        if len(nets) != len(self.nets) or len(steps) != len(self.nets):
            raise ValueError(f"weights file {path} holds {len(nets)} networks, this run has {len(self.nets)}")
        for k, sd in enumerate(nets):
            want = {name: tuple(t.shape) for name, t in self.nets[k].state_dict().items()}
            got = {name: tuple(t.shape) for name, t in sd.items()} if isinstance(sd, dict) else {}
            if got != want:
                raise ValueError(f"weights file {path}: network {k} (lag {self.lags[k]}) does not fit this run's "
                                 f"model settings")
        for k, sd in enumerate(nets):
            self.nets[k].load_state_dict(sd)
            if self.infer_nets is not None:
                self.infer_nets[k].load_state_dict(sd)
        # The normaliser is refitted on this stream's first frame: the networks work in
        # normalised units, so weights carry over between movies of different brightness.
        self.stage_steps = steps


# Model settings that change what the networks compute: weights are loaded only into a
# cascade that agrees on every one of them (read from ModelConfig; see network_mismatch).
NETWORK_SETTINGS = ("lags", "base_channels", "levels", "windows", "clip", "slow_skip", "work_size")


def network_mismatch(saved: dict, cfg: ModelConfig) -> tuple[str, object, object] | None:
    """The first of NETWORK_SETTINGS on which the model settings ``saved`` with weights or a
    run file (JSON, as ``model_dump(mode="json")`` writes them) differ from ``cfg``: (name,
    saved value, this run's), or None when they agree. The one rule for weights files,
    checkpoints and resumed runs: a setting missing from ``saved`` (written before the
    setting existed) had its default."""
    mine = cfg.model_dump(mode="json")
    defaults = type(cfg)().model_dump(mode="json")
    for key in NETWORK_SETTINGS:
        value = saved.get(key, defaults[key])
        if value != mine[key]:
            return key, value, mine[key]
    return None
