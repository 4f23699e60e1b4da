"""The lag U-Net and the arithmetic its convolutions run in."""
from __future__ import annotations

import pytest
import torch

from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig
from lagsplit.engine.nets import _upconv, resolve_precision


def test_upsampling_convolution_is_the_transposed_convolution_it_stands_for():
    up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_upconv(up, x), up(x), atol=1e-5, rtol=1e-5)
    # and its gradients reach the same weights
    _upconv(up, x).square().sum().backward()
    got = up.weight.grad.clone()
    up.weight.grad = None
    up(x).square().sum().backward()
    torch.testing.assert_close(got, up.weight.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "want"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_precision_named_is_the_precision_used(name, want):
    assert resolve_precision(name, torch.device("cpu")) == want


def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it_natively(monkeypatch):
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        want = torch.bfloat16 if native else torch.float32
        assert resolve_precision("auto", torch.device("cpu")) == want


def test_bfloat16_networks_give_float32_slow_close_to_float32_networks(noise_stack):
    outs = {}
    for precision in ("float32", "bfloat16"):
        cfg = ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8,), bleach_tiles=0, gate_decay=0,
                          precision=precision)
        c = Cascade(cfg, history=8, warmup_steps=0)
        torch.nn.init.normal_(c.nets[0].head.weight, std=0.1)  # a correction that is not zero
        for frame in noise_stack:
            out = c.infer(torch.from_numpy(frame.astype("float32")))
        assert out.slow.dtype == torch.float32 and not out.warmup
        outs[precision] = out.slow
    scale = float(outs["float32"].std())
    assert 0 < float((outs["bfloat16"] - outs["float32"]).abs().max()) < 0.05 * scale
