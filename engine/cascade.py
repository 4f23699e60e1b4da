"""The greedy residual cascade of lag autoencoders (DESIGN.md §1).

    slow_t = g_8(x_{t-8});  r1_t = x_t - slow_t
    C_4(t) = g_4(r1_{t-4}); r2_t = r1_t - C_4(t)   ... and so on down the lags
    fast_t = x_t - slow_t;  residual_t = x_t - sum_L C_L(t)

Each stage reads its inputs from the ring (channel k holds what stage k sees), so
training pairs for every stage come from the same preallocated storage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import ModelConfig
from .features import TemporalFeatures
from .nets import LagUNet
from .ring import Ring


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
    """Normalised-unit result of one frame through the cascade (tensors on the device)."""

    position: int
    slow: torch.Tensor
    components: list[torch.Tensor]  # one per lag, longest first; slow is components[0]
    residual: torch.Tensor
    warmup: bool


class Cascade:
    """Owns the lag networks, the ring and the normaliser; turns frames into components."""

    def __init__(self, cfg: ModelConfig, history: int, warmup_steps: int, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.lags = tuple(cfg.lags)
        self.device = device if device is not None else resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.span = max(self.lags) + (cfg.context - 1) * cfg.context_stride
        capacity = max(self.span + history + 1, cfg.warmup_median, max(cfg.medians, default=0))
        # channels: the frame, the residual each shorter-lag stage sees, then the slow stage's
        # temporal features (running medians), written once when a frame arrives
        n_feat = len(cfg.medians)
        self.ring = Ring(capacity, channels=len(self.lags) + n_feat, device=self.device)
        self.features = TemporalFeatures(self.ring, len(self.lags), cfg.medians)
        torch.manual_seed(cfg.seed)
        in_ch = cfg.context + (1 if cfg.median_channel else 0)
        longest = self.features.longest()
        skip = in_ch + longest if cfg.slow_skip and longest is not None else None
        self.nets = [LagUNet(in_ch + (n_feat if k == 0 else 0), cfg.base_channels, cfg.levels,
                             skip_channel=skip if k == 0 else None).to(self.device)
                     for k in range(len(self.lags))]
        self.norm = Normaliser()
        self.warmup_steps = warmup_steps
        self.stage_steps = [0] * len(self.lags)  # training steps taken per stage
        self._offsets = torch.arange(cfg.context) * cfg.context_stride

    # ---- geometry ---------------------------------------------------------------------------
    def input_positions(self, stage: int, targets: torch.Tensor) -> torch.Tensor:
        """Ring positions feeding stage ``stage`` for target positions ``targets`` -> (B, context)."""
        return targets.reshape(-1, 1) - self.lags[stage] - self._offsets.reshape(1, -1)

    def first_target(self, stage: int) -> int:
        """Earliest target position whose inputs for this stage are all in the ring."""
        span = self.lags[stage] + (self.cfg.context - 1) * self.cfg.context_stride
        return max(span, self.ring.oldest() + span)

    def stage_inputs(self, stage: int, targets: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) network input for each target position."""
        pos = self.input_positions(stage, targets)
        x = self.ring.gather(stage, pos)
        if self.cfg.median_channel:
            w = self.cfg.warmup_median
            last = pos[:, :1]
            window = last - torch.arange(w).reshape(1, -1)
            window = torch.clamp(window, min=self.ring.oldest())
            med = self.ring.gather(stage, window).median(dim=1, keepdim=True).values
            x = torch.cat([x, med], dim=1)
        if stage == 0 and self.features.count:
            last = pos[:, 0]
            feats = [self.ring.gather(self.features.first + j, last) for j in range(self.features.count)]
            x = torch.cat([x, torch.stack(feats, dim=1)], dim=1)
        return x

    @property
    def warm(self) -> bool:
        """True once the slow stage has trained enough to replace the running median."""
        return self.stage_steps[0] >= self.warmup_steps

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, frame: torch.Tensor, valid: bool = True) -> StageOutput:
        """Push one (H, W) frame in ADU (float32, on the device) and decompose it."""
        if self.ring.data is None:
            self.ring.allocate(tuple(frame.shape))  # type: ignore[arg-type]
        if not self.norm.fitted:
            self.norm.fit(frame)
        x = (frame - self.norm.offset) / self.norm.scale
        if not valid:
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        pos = self.ring.push(x, valid)
        self.features.update(pos)
        target = torch.tensor([pos])
        use_net = self.warm and pos >= self.first_target(0)
        for net in self.nets:
            net.eval()
        comps: list[torch.Tensor] = []
        if use_net:
            slow = self.nets[0](self.stage_inputs(0, target))[0, 0]
        else:
            slow = self.ring.running_median(pos, self.cfg.warmup_median)
        comps.append(slow)
        r = x - slow
        for k in range(1, len(self.lags)):
            self.ring.write(k, pos, r)
            if use_net and pos >= self.first_target(k) and self.stage_steps[k] > 0:
                c = self.nets[k](self.stage_inputs(k, target))[0, 0]
            else:
                c = torch.zeros_like(r)
            comps.append(c)
            r = r - c
        return StageOutput(pos, slow, comps, r, warmup=not use_net)

    def to_adu(self, out: StageOutput, raw: np.ndarray, components: bool) -> tuple:
        """Denormalise to the input's units: (slow, fast, components dict | None, residual | None).

        ``fast`` is computed as raw - slow in float32 so slow + fast == raw exactly up to rounding.
        """
        s, o = self.norm.scale, self.norm.offset
        slow = (out.slow * s + o).float().cpu().numpy()
        rawf = raw.astype(np.float32, copy=False)
        fast = rawf - slow
        if not components:
            return slow, fast, None, None
        comps = {lag: (c * s).float().cpu().numpy() for lag, c in zip(self.lags[1:], out.components[1:])}
        comps = {self.lags[0]: slow, **comps}
        residual = rawf - sum(comps.values())
        return slow, fast, comps, residual

    def restart_stream(self) -> None:
        """Forget the frames held (a new stream, or another pass over a stack); weights,
        normaliser and training counts stay. The ring's storage is kept, not reallocated."""
        self.ring.count = 0
        self.ring.valid.zero_()

    # ---- weights ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "lags": list(self.lags),
            "model": self.cfg.model_dump(mode="json"),
            "norm": {"offset": self.norm.offset, "scale": self.norm.scale, "fitted": self.norm.fitted},
            "nets": [n.state_dict() for n in self.nets],
            "stage_steps": list(self.stage_steps),
        }

    def save(self, path: str) -> None:
        torch.save(self.state(), path)

    def load(self, path: str) -> None:
        """Start from saved weights (``lagsplit pretrain``). Lags and network shape must match."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        if list(state["lags"]) != list(self.lags):
            raise ValueError(f"weights in {path} are for lags {state['lags']}, this run uses {list(self.lags)}")
        mine = self.cfg.model_dump(mode="json")
        defaults = type(self.cfg)().model_dump(mode="json")
        for key in ("base_channels", "levels", "context", "median_channel", "medians", "slow_skip"):
            saved = state["model"].get(key, defaults[key])
            if saved != mine[key]:
                raise ValueError(f"weights in {path} have model.{key} = {saved!r}, this run uses {mine[key]!r}")
        for net, sd in zip(self.nets, state["nets"]):
            net.load_state_dict(sd)
        # The normaliser is refitted on this stream's first frame: the networks work in
        # normalised units, so weights carry over between movies of different brightness.
        self.stage_steps = list(state["stage_steps"])
