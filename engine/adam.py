"""Adam for the online trainer: torch's fused Adam kernel, called as ``torch.optim.Adam(...,
fused=True)`` calls it (the same arithmetic, the same numbers), without ``torch.optim``'s
compile support around it. ``torch.optim`` imports ``torch._dynamo`` (the compiler, 1.7 s on
a 2-core CPU) the first time an optimiser is built or steps, although lagsplit compiles
nothing; this one never does, so a run's start-up does not wait for it.

Its ``state_dict()`` has the layout of ``torch.optim.Adam``'s (a checkpoint holds either),
and ``load_state_dict`` takes both.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
            "foreach": None, "capturable": False, "differentiable": False, "fused": True,
            "decoupled_weight_decay": False}
"""``torch.optim.Adam``'s hyperparameters besides ``lr``, as its ``state_dict`` names them
(the fused kernel's defaults)."""


class FusedAdam:
    """Adam over ``params`` (one group) with torch's fused kernel: per parameter with a
    gradient, a float32 step count and the two moment averages, created at its first step."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = list(params)
        self.group: dict[str, Any] = {"lr": lr, **DEFAULTS}
        self.state: dict[int, dict[str, torch.Tensor]] = {}  # parameter position -> its state

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (``set_to_none``) or zero them in place."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter with a gradient."""
        g = self.group
        params, grads, avgs, sqs, steps = [], [], [], [], []
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                      "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                      "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            params.append(p)
            grads.append(p.grad)
            avgs.append(st["exp_avg"])
            sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
        # torch.optim's fused Adam groups the tensors by device and dtype and calls the kernel
        # once per group, in the parameters' order within each
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for k, p in enumerate(params):
            groups.setdefault((p.device, p.dtype), []).append(k)
        beta1, beta2 = g["betas"]
        for ks in groups.values():
            pick = [[lst[k] for k in ks] for lst in (params, grads, avgs, sqs, steps)]
            torch._foreach_add_(pick[4], 1)
            torch._fused_adam_(pick[0], pick[1], pick[2], pick[3], [], pick[4], amsgrad=False, lr=g["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=g["weight_decay"], eps=g["eps"],
                               maximize=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict:
        """The state in ``torch.optim.Adam``'s layout (tensors shared, not copied)."""
        return {"state": {i: dict(st) for i, st in self.state.items()},
                "param_groups": [{**self.group, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, sd: dict) -> None:
        """Continue from ``sd`` (this class's or ``torch.optim.Adam``'s with one group and
        fused=True over the same parameters); ValueError when it does not fit."""
        groups = sd["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            held = " + ".join(str(len(g["params"])) for g in groups)
            raise ValueError(f"optimiser state for {held} parameters in {len(groups)} group(s); this "
                             f"optimiser has {len(self.params)} in one")
        saved = groups[0]
        for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
            if saved.get(key, False):
                raise ValueError(f"optimiser state with {key} = True; this Adam has it False")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for pos, ident in enumerate(saved["params"]):
            st = sd["state"].get(ident)
            if not st:
                continue
            p = self.params[pos]
            state[pos] = {"step": st["step"].to(device=p.device, dtype=torch.float32),
                          "exp_avg": st["exp_avg"].to(device=p.device, dtype=p.dtype),
                          "exp_avg_sq": st["exp_avg_sq"].to(device=p.device, dtype=p.dtype)}
        self.state = state
        self.group = {**self.group, **{k: v for k, v in saved.items() if k != "params"}}
        self.group["betas"] = tuple(self.group["betas"])


__all__ = ["FusedAdam"]
