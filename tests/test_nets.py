"""The lag U-Net and the arithmetic its convolutions run in."""
from __future__ import annotations

import pytest
import torch

from lagsplit.engine.cascade import Cascade
from lagsplit.engine.config import ModelConfig
from lagsplit.engine.nets import LagUNet, _DenseGrad, _head, _upconv, resolve_precision


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


def test_head_is_the_one_channel_convolution_it_stands_for():
    head = torch.nn.Conv2d(8, 1, 1)
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.testing.assert_close(_head(head, x), head(x), atol=1e-5, rtol=1e-5)
    _head(head, x).square().sum().backward()
    got = [t.grad.clone() for t in (x, head.weight, head.bias)]
    for t in (x, head.weight, head.bias):
        t.grad = None
    head(x).square().sum().backward()
    for g, t in zip(got, (x, head.weight, head.bias)):
        torch.testing.assert_close(g, t.grad, atol=1e-4, rtol=1e-4)


def test_skip_gradients_come_back_dense_and_unchanged():
    big = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    y = _DenseGrad.apply(x)
    torch.testing.assert_close(y, x)
    # a channel slice of a channels-last gradient, as torch.cat hands a skip its share
    grad = big[:, 8:]
    assert not grad.is_contiguous(memory_format=torch.channels_last)
    seen = []
    x_mid = x * 1.0
    x_mid.register_hook(seen.append)  # the gradient as it leaves _DenseGrad
    _DenseGrad.apply(x_mid).backward(grad)
    torch.testing.assert_close(seen[0], grad)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)


def test_network_trains_as_the_plain_layers_would():
    """The U-Net's forward and gradients equal those of its layers applied one by one (the
    transposed convolutions, the head as the modules themselves compute them)."""
    torch.manual_seed(0)
    net = LagUNet(3, 8, 2, skip_channel=1)
    torch.nn.init.normal_(net.head.weight, std=0.1)
    x = torch.randn(2, 3, 16, 16)

    def plain(x):
        base = x[:, 1:2]
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for block in net.down:
            x = block(x)
            skips.append(x)
            x = torch.nn.functional.avg_pool2d(x, 2)
        x = net.bottom(x)
        for up, merge, skip in zip(net.up, net.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return net.head(x) + base

    net(x).square().mean().backward()
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    want_y = plain(x)
    torch.testing.assert_close(net(x), want_y, atol=1e-5, rtol=1e-4)
    want_y.square().mean().backward()
    for g, p in zip(got, net.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)


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
