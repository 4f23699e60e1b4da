"""Online fine-tuning of the cascade from the ring (docs/design.md §1-2).

Each stage trains against the residual left by the longer lags, with gradients
stopped at the earlier stages (their outputs are stored in the ring, detached).
"""
from __future__ import annotations

import copy
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from .adam import FusedAdam
from .cascade import Cascade
from .config import TrainConfig
from .nets import predict
from .status import RunningMean

log = logging.getLogger("lagsplit.trainer")
RECENT_LOSSES = 32  # accepted losses per stage whose median a diverging loss is compared with
DIVERGED_LOGGED = 10  # divergences logged; the rest are counted
SLACK_POLL_S = 0.005  # how often an idle training thread looks for slack
STEP_TIME_ALPHA = 0.2  # weight of a new step's duration in the running step time

_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "huber": F.smooth_l1_loss,
}


@dataclass
class StepResult:
    """One training step: its number (the new model version) and the loss of each lag
    (NaN for lags not trained in this step)."""

    step: int
    losses: list[float] = field(default_factory=list)


class OnlineTrainer:
    """Fine-tunes the cascade's networks on random crops of pairs from the ring.

    ``after_frame(slack)`` is called by the worker once a frame's components are out and
    returns the steps taken since the last call. 'fixed' takes its steps there and then
    (deterministic). 'slack' trains on a thread of its own once :meth:`start` has run: a
    frame's output never waits for a training step; the thread takes the steps the frames
    ask for (``min_steps_per_frame`` each, one until warm; the worker waits when it is more
    than a frame behind) and more while no frame waits for the worker, at most
    ``max_steps_per_frame`` since the last frame. Without :meth:`start`,
    'slack' trains in the worker while ``slack()`` says no frame is waiting.
    """

    def __init__(self, cascade: Cascade, cfg: TrainConfig) -> None:
        self.cascade = cascade
        self.cfg = cfg
        self.opts = [FusedAdam(n.parameters(), lr=cfg.lr) for n in cascade.nets]
        # Inference reads an exponential average of the trained weights: one step's noise
        # (a batch of a few noisy crops) is averaged out instead of landing in the output.
        if cfg.ema > 0:
            cascade.infer_nets = [copy.deepcopy(n).eval() for n in cascade.nets]
        for net in cascade.nets:
            net.train()  # once: the U-Net has no layer that behaves otherwise in eval mode
        # each stage's parameters (the networks are never replaced: weights load in place),
        # and those of their averages: listed once, not on every step
        self._params = [list(n.parameters()) for n in cascade.nets]
        self._avg_params = [list(n.parameters()) for n in cascade.infer_nets] if cascade.infer_nets else None
        self.gen = torch.Generator().manual_seed(cascade.cfg.seed + 1)
        self.version = 0  # steps completed; every output row records it
        self.skipped = 0  # steps skipped for a non-finite loss or gradient, or a divergence
        self.diverged = 0  # of those, steps whose previous step had made the loss explode
        # divergence (cfg.diverge_ratio): per stage, the losses of recent accepted steps, the
        # weights before the last step taken (buffers kept for them), and whether that step
        # awaits confirmation
        self._recent: list[deque[float]] = [deque(maxlen=RECENT_LOSSES) for _ in cascade.lags]
        self._before = [[torch.empty_like(p) for p in params] for params in self._params]
        self._unconfirmed = [False] * len(cascade.lags)
        self.last_loss = [math.nan] * len(cascade.lags)
        self._rotate = 0
        # held while a step changes the weights (and the optimisers, the averages, the step
        # counts): a checkpoint copies them under it, so it never holds half a step
        self.weights_lock = threading.Lock()
        # the training thread (slack mode, after start())
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False
        self._frames = 0  # frames the worker has announced
        self._since_frame = 0  # steps since the last frame
        self._stalled_at = -1  # the frame count at which no training pair was found
        self._owed = 0  # steps the frames so far asked for (min_steps_per_frame each) not yet taken
        self._slack: Callable[[], bool] = lambda: True  # no frame waiting for the worker (from after_frame)
        self._done: list[StepResult] = []
        # running seconds a step takes on this machine (the first step, which pays for
        # allocations, left out), read with the cascade's clock
        self._step_time = RunningMean(STEP_TIME_ALPHA, skip_first=True)

    # ---- the training thread ----------------------------------------------------------------
    def start(self) -> None:
        """Slack mode: train on a thread of its own from now on (the other modes train in
        the worker, or not at all). Called as the run starts."""
        if self.cfg.mode != "fixed" and not self.cascade.cfg.threads:
            # one torch thread each for the worker and the trainer: two threads apiece on two
            # cores wait on each other (and on the source, the writer, anything else the
            # machine runs); so does a lone worker's pair (inference only: 'off')
            torch.set_num_threads(1)
        if self.cfg.mode != "slack" or self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="lagsplit-trainer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the step under way and end the training thread."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def drain(self) -> list[StepResult]:
        """The steps the training thread took that no ``after_frame`` has returned yet."""
        with self._cond:
            done, self._done = self._done, []
        return done

    def _loop(self) -> None:
        cfg = self.cfg
        try:
            while True:
                with self._cond:
                    # a step the frames asked for, or one in the slack (no frame waiting for
                    # the worker), at most max_steps_per_frame since the last frame; the
                    # slack is looked at again every SLACK_POLL_S
                    while self._running and not (self._stalled_at != self._frames and (
                            self._owed > 0 or (self._since_frame < cfg.max_steps_per_frame and self._slack()))):
                        self._cond.wait(SLACK_POLL_S)
                    if not self._running:
                        return
                    frames = self._frames
                res = self.step()
                with self._cond:
                    if res is None:
                        self._stalled_at = frames  # nothing to train on until the next frame
                        self._owed = 0
                    else:
                        self._since_frame += 1
                        self._owed = max(0, self._owed - 1)
                        self._done.append(res)
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - the run goes on with the last weights
            log.exception("training thread failed; the run goes on with the last weights")
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def _steps_owed(self, wait: bool) -> int:
        """Steps a frame waits for in slack mode: ``min_steps_per_frame``, and until warm one
        at least (warm-up ends after a bounded number of frames however busy the machine
        is); none when the engine sheds them (``wait`` False) to hold its latency bound."""
        return max(self.cfg.min_steps_per_frame, 0 if self.cascade.warm else 1) if wait else 0

    def _after_frame_threaded(self, slack: Callable[[], bool], wait: bool) -> list[StepResult]:
        n_min = self._steps_owed(wait)
        with self._cond:
            self._slack = slack
            self._frames += 1
            self._since_frame = 0
            self._owed += n_min
            self._cond.notify_all()
            if n_min:
                # the trainer may run one frame behind (its steps overlap the next frame's
                # inference), never more
                frames = self._frames
                self._cond.wait_for(lambda: not self._running or self._owed <= n_min
                                    or self._stalled_at == frames)
            done, self._done = self._done, []
        return done

    def after_frame(self, slack: Callable[[], bool], wait: bool = True) -> list[StepResult]:
        """Train as the mode says; return the steps taken. ``wait`` False: in slack mode
        the frame waits for no step (the engine sheds them); fixed mode always takes its
        steps, as it promises."""
        cfg = self.cfg
        if cfg.mode == "off":
            return []
        if self._thread is not None:
            return self._after_frame_threaded(slack, wait)
        if cfg.mode == "fixed":
            n_min, n_max = cfg.steps_per_frame, cfg.steps_per_frame
        else:
            n_min = self._steps_owed(wait)
            n_max = cfg.max_steps_per_frame
        done: list[StepResult] = []
        while len(done) < n_max:
            if len(done) >= n_min and not slack():
                break
            res = self.step()
            if res is None:
                break
            done.append(res)
        return done

    def _stages_this_step(self) -> list[int]:
        n = self.cascade.stages
        if self.cfg.stages_per_step == "all" or n == 1:
            return list(range(n))
        k = 1 + self._rotate % (n - 1)
        self._rotate += 1
        return [0, k]

    def step(self) -> StepResult | None:
        """One training step; None when the ring does not yet hold a training pair."""
        with self.weights_lock:
            t = self.cascade.clock()
            res = self._step()
            if res is not None:
                self._step_time.add(self.cascade.clock() - t)
            return res

    @property
    def step_seconds(self) -> float | None:
        """The running time of a step on this machine (None until a second step)."""
        return self._step_time.value

    def owed_seconds(self) -> float | None:
        """What the training steps a frame waits for cost it in slack mode (its owed steps
        times a step's running time; None while a step's time is not known yet). The
        engine's measure of what shedding them saves."""
        n = self._steps_owed(True) if self.cfg.mode == "slack" else 0
        if not n:
            return 0.0
        return None if self.step_seconds is None else n * self.step_seconds

    def _step(self) -> StepResult | None:
        c = self.cascade
        if c.ring.count == 0 or c.ring.count - 1 < c.first_target(0):
            return None
        losses = [math.nan] * len(c.lags)
        trained = False
        for k in self._stages_this_step():
            loss = self._train_stage(k)
            if loss is not None:
                losses[k] = loss
                self.last_loss[k] = loss
                trained = True
        if not trained:
            return None
        self.version += 1
        return StepResult(self.version, losses)

    def _sample(self, stage: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self.cascade.lock:  # the worker writes the ring under the same lock
            return self._sample_locked(stage)

    def _sample_locked(self, stage: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        c, cfg = self.cascade, self.cfg
        ring = c.ring
        lo, hi = c.first_target(stage), ring.count - 1
        if hi < lo:
            return None
        targets = torch.randint(lo, hi + 1, (cfg.batch,), generator=self.gen)
        pos = c.input_positions(stage, targets)
        ok = ring.valid[ring.slots(targets)].cpu() & ring.valid[ring.slots(pos)].all(dim=1).cpu()
        # a pair whose inputs lie before a sudden change and target after it teaches nothing
        ok &= (ring.segment_of(pos) == ring.segment_of(targets).reshape(-1, 1)).all(dim=1)
        if not bool(ok.any()):
            return None
        targets = targets[ok]
        x = c.stage_inputs(stage, targets)
        y = ring.gather(stage, targets).unsqueeze(1)
        h, w = x.shape[-2:]
        ch, cw = min(cfg.crop, h), min(cfg.crop, w)
        ys = torch.randint(0, h - ch + 1, (len(targets),), generator=self.gen).tolist()
        xs = torch.randint(0, w - cw + 1, (len(targets),), generator=self.gen).tolist()
        xb = torch.stack([x[i, :, a : a + ch, b : b + cw] for i, (a, b) in enumerate(zip(ys, xs))])
        yb = torch.stack([y[i, :, a : a + ch, b : b + cw] for i, (a, b) in enumerate(zip(ys, xs))])
        return xb, yb

    def _train_stage(self, stage: int) -> float | None:
        batch = self._sample(stage)
        if batch is None:
            return None
        xb, yb = batch
        net, opt = self.cascade.nets[stage], self.opts[stage]
        # L1 for slow: it learns the conditional median, which leaves out spots that
        # occupy a pixel part of the time
        loss_fn = F.l1_loss if stage == 0 else _LOSSES[self.cfg.fast_loss]
        loss = loss_fn(self._forward(net, xb), yb)
        if not torch.isfinite(loss) or self._exploded(stage, float(loss.detach())):
            verdict = self._diverged(stage, net, loss_fn, xb, yb, float(loss.detach()))
            if verdict == "diverged":
                return None
            if verdict == "data changed":
                loss = loss_fn(self._forward(net, xb), yb)  # the weights were put back in place: a fresh graph
            if not torch.isfinite(loss):
                self.skipped += 1
                opt.zero_grad(set_to_none=True)
                return None
        self._confirm(stage)
        self._recent[stage].append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self._params[stage], self.cfg.grad_clip)
        if not torch.isfinite(norm):
            self.skipped += 1
            opt.zero_grad(set_to_none=True)
            return None
        if self.cfg.diverge_ratio > 0:
            with torch.no_grad():
                torch._foreach_copy_(self._before[stage], self._params[stage])
            self._unconfirmed[stage] = True
        opt.step()
        if self.cfg.diverge_ratio <= 0:
            self._average(stage)  # no confirmation asked for: averaged at once
        self.cascade.stage_steps[stage] += 1
        return float(loss.detach())

    def _forward(self, net, xb: torch.Tensor) -> torch.Tensor:
        """The network's prediction for a training batch, in the cascade's precision."""
        return predict(net, xb, self.cascade.precision)

    # ---- divergence ---------------------------------------------------------------------------
    def _exploded(self, stage: int, loss: float) -> bool:
        """The loss is ``diverge_ratio`` times the median of the stage's recent ones or more."""
        recent = self._recent[stage]
        return self.cfg.diverge_ratio > 0 and bool(recent) and loss > self.cfg.diverge_ratio * float(np.median(recent))

    def _diverged(self, stage: int, net, loss_fn, xb: torch.Tensor, yb: torch.Tensor, loss: float) -> str | None:
        """A loss that exploded (or is not finite) right after a step: if the weights before
        that step do better on the same batch, the step diverged: they are restored, and this
        step is skipped and counted ("diverged"). If they do as badly, the data changed (a
        sudden change): the recent losses start afresh and training goes on ("data changed").
        None when there is no step to blame."""
        if not self._unconfirmed[stage]:
            return None
        with torch.no_grad():
            params = self._params[stage]
            now = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, self._before[stage])
            was = float(loss_fn(self._forward(net, xb), yb))
        recent = self._recent[stage]
        if np.isfinite(was) and not self._exploded(stage, was):
            self._unconfirmed[stage] = False
            self.skipped += 1
            self.diverged += 1
            if self.diverged <= DIVERGED_LOGGED:
                log.warning("training step of lag %d diverged (loss %.4g, %.0f x the recent median %.4g): the "
                            "weights before it are restored and the step skipped%s", self.cascade.lags[stage], loss,
                            loss / max(float(np.median(recent)), 1e-12), float(np.median(recent)),
                            "" if self.diverged < DIVERGED_LOGGED else " (further divergences are counted, not logged)")
            return "diverged"
        with torch.no_grad():
            torch._foreach_copy_(params, now)  # the data changed: keep the newest weights
        recent.clear()
        return "data changed"

    def _confirm(self, stage: int) -> None:
        """This step's loss is in line with the recent ones: the previous step's weights are
        good, and only now enter the average inference reads."""
        if self._unconfirmed[stage]:
            self._average(stage)
            self._unconfirmed[stage] = False

    def _average(self, stage: int) -> None:
        if self._avg_params is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self._avg_params[stage], self._params[stage], 1.0 - self.cfg.ema)
