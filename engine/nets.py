"""The lag autoencoder: a small U-Net (skip connections at every level).

A bottleneck without skips blurs fine structure away (docs/design.md §1), so every
level passes its features across to the decoder.
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn
from torch.nn import functional as F


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.1, inplace=True),
    )


class LagUNet(nn.Module):
    """Predicts a frame (1 channel) from ``in_channels`` past planes; with ``skip_channel``,
    as that input plane plus a learnt correction.

    Works on any H, W: inputs are padded up to a multiple of 2**levels and the
    output is cropped back. Weights and activations are kept channels-last (NHWC): the
    convolution kernels torch uses on a CPU run faster that way, and so do cuDNN's.
    """

    def __init__(self, in_channels: int = 1, base: int = 16, levels: int = 2, skip_channel: int | None = None) -> None:
        super().__init__()
        self.levels = levels
        self.skip_channel = skip_channel
        widths = [base * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(_block(cin, w))
            cin = w
        self.bottom = _block(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.merge.append(_block(2 * widths[i], widths[i]))
        self.head = nn.Conv2d(widths[0], 1, 1)
        if skip_channel is not None:
            # Predict a correction to input plane ``skip_channel``: a zero head makes the
            # untrained network return that plane exactly, and training learns what to add.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        base = x[:, self.skip_channel : self.skip_channel + 1] if self.skip_channel is not None else None
        m = 2**self.levels
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(_DenseGrad.apply(x) if x.requires_grad else x)
            x = F.avg_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([_upconv(up, x), skip], dim=1))
        y = _head(self.head, x)[..., :h, :w].contiguous()
        return y if base is None else y + base


class _DenseGrad(torch.autograd.Function):
    """The identity, whose gradient is handed back channels-last and dense. A skip's
    gradient comes back from ``torch.cat`` as a channel slice of the merged gradient; added
    as such to the pooling's gradient it takes a strided elementwise path (in bfloat16 on a
    CPU, several times slower than a copy and a dense add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _head(head: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``head(x)`` for the 1 x 1 convolution to one channel (``x`` channels-last): a matrix
    product over the channels of each pixel, whose backward pass on a CPU costs a fraction of
    a convolution's."""
    y = F.linear(x.permute(0, 2, 3, 1), head.weight.view(head.out_channels, -1), head.bias)
    return y.permute(0, 3, 1, 2)


def _upconv(up: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``up(x)`` for a 2 x 2, stride-2 transposed convolution (``x`` channels-last), computed
    as what it is: a 1 x 1 convolution to the four output pixels of each input pixel (the
    same weights, reshaped; the four pixels as the outer channel groups), whose channel
    runs are then moved into place, channels-last. On a CPU its backward pass is a
    matrix product and a copy instead of a transposed convolution's."""
    w = up.weight  # (in, out, 2, 2)
    cin, cout = w.shape[:2]
    y = F.conv2d(x, w.permute(2, 3, 1, 0).reshape(4 * cout, cin, 1, 1), up.bias.repeat(4))
    n, _, h, wd = y.shape
    # channels-last memory is (n, h, w, [a, b, cout]): output pixel (2i + a, 2j + b)
    pixels = y.permute(0, 2, 3, 1).reshape(n, h, wd, 2, 2, cout)
    out = pixels.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * wd, cout)
    return out.permute(0, 3, 1, 2)


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively (AVX512-BF16 or AMX) and
    oneDNN may use those instructions (``ONEDNN_MAX_CPU_ISA`` can cap it below them, as on
    an AVX2 machine)."""
    cpu = torch.cpu
    has = any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return has and (cap in ("ALL", "DEFAULT") or "BF16" in cap or "AMX" in cap)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``model.precision`` as the dtype the networks compute in on ``device``: 'auto' is
    bfloat16 where the device computes it natively, float32 elsewhere."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        native = cpu_bf16_native()
    else:  # another accelerator: float32, which every backend computes
        native = False
    return torch.bfloat16 if native else torch.float32


def predict(net: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``net(x)`` with its convolutions computed in ``dtype`` (autocast for bfloat16; the
    model resolves it from ``model.precision``), as float32: inference and training alike."""
    context = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(x.device.type, dtype=dtype)
    with context:
        return net(x).float()


def precision_label(name: str, device: str) -> str:
    """What ``model.precision`` = ``name`` resolves to on ``model.device`` = ``device``, for
    reports: 'bfloat16' or 'float32'."""
    from .cascade import resolve_device

    return str(resolve_precision(name, resolve_device(device))).removeprefix("torch.")
