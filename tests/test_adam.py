"""The trainer's Adam gives torch.optim.Adam(fused=True)'s numbers, and their states load into each other."""
from __future__ import annotations

import pytest
import torch

from lagsplit.engine.adam import FusedAdam


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))


def _steps(net: torch.nn.Module, opt, n: int, seed: int = 1) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n):
        x = torch.randn(3, 2, 8, 8, generator=gen)
        loss = net(x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_the_same_numbers_as_torch_fused_adam():
    ours, theirs = _net(0), _net(0)
    a = FusedAdam(ours.parameters(), lr=1e-3)
    b = torch.optim.Adam(theirs.parameters(), lr=1e-3, fused=True)
    assert _steps(ours, a, 6) == _steps(theirs, b, 6)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    ref = b.state_dict()
    mine = a.state_dict()
    assert mine["param_groups"] == ref["param_groups"]
    assert mine["state"].keys() == ref["state"].keys()
    for i, st in ref["state"].items():
        for key, value in st.items():
            assert torch.equal(mine["state"][i][key], value) and mine["state"][i][key].dtype == value.dtype


def test_state_dicts_load_both_ways_and_continue_alike():
    ours, theirs = _net(0), _net(0)
    a = FusedAdam(ours.parameters(), lr=1e-3)
    b = torch.optim.Adam(theirs.parameters(), lr=1e-3, fused=True)
    _steps(ours, a, 3)
    _steps(theirs, b, 3)
    # swap the states: each continues from the other's (the same numbers, so the same result)
    ours2, theirs2 = _net(5), _net(5)
    ours2.load_state_dict(theirs.state_dict())
    theirs2.load_state_dict(ours.state_dict())
    a2 = FusedAdam(ours2.parameters(), lr=0.5)  # the lr comes from the state loaded
    a2.load_state_dict(b.state_dict())
    b2 = torch.optim.Adam(theirs2.parameters(), lr=0.5, fused=True)
    b2.load_state_dict(a.state_dict())
    assert a2.group["lr"] == 1e-3
    assert _steps(ours2, a2, 3, seed=7) == _steps(theirs2, b2, 3, seed=7)
    for p, q in zip(ours2.parameters(), theirs2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_state_for_other_parameters_is_refused():
    a = FusedAdam(_net(0).parameters(), lr=1e-3)
    other = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3, fused=True)
    with pytest.raises(ValueError, match="2 parameters"):
        a.load_state_dict(other.state_dict())
