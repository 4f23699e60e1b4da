"""The CUDA path (run on purpose on a machine with a GPU: pytest -m gpu)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lagsplit.adapters.synthetic import ArrayStream
from lagsplit.engine.config import ModelConfig, TrainConfig
from tests.support import ListSink, run_engine

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_device_runs_the_whole_cascade_on_cuda(noise_stack):
    model = ModelConfig(lags=(4, 2, 1), base_channels=8, levels=2, device="auto")
    train = TrainConfig(mode="fixed", steps_per_frame=2, warmup_steps=5, batch=4, crop=16, history=16)
    sink = ListSink()
    status, cascade = run_engine(ArrayStream(noise_stack), model, train, components=True, sinks=[sink])
    assert status.device.startswith("cuda") and cascade.ring.data.is_cuda
    assert all(p.is_cuda for p in cascade.nets[0].parameters())
    assert status.processed == len(noise_stack) and status.train_steps > 0
    for r, frame in zip(sink.results, noise_stack):
        np.testing.assert_allclose(r.slow + r.fast, frame.astype(np.float32), atol=1e-3)
        np.testing.assert_allclose(sum(r.components.values()) + r.residual, frame.astype(np.float32), atol=1e-2)


def test_frames_go_to_the_device_once_through_pinned_memory():
    from lagsplit.engine.cascade import Cascade

    c = Cascade(ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8,), device="cuda"), history=8,
                warmup_steps=0)
    raw = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    x, valid = c.upload(raw)
    assert valid and x.is_cuda and c._pinned_in.is_pinned()
    np.testing.assert_array_equal(x.cpu().numpy(), raw.astype(np.float32))


def test_the_gate_chooses_its_gain_on_the_device():
    """Choosing the gate's gain copies nothing to the host: with CUDA's sync debug mode set
    to error, any synchronisation would raise."""
    from lagsplit.engine.cascade import CorrectionGate

    gate = CorrectionGate(0.9)
    base, pred, target = (torch.rand(64, 64, device="cuda") for _ in range(3))
    gate.apply(base, pred, target)  # the first call moves the gate's state to the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            out = gate.apply(base, pred, target)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.is_cuda and 0.0 <= gate.value <= 1.0


def test_full_resolution_work_needs_no_host_synchronisation():
    """Binning, the gain map and the upsampling with the fine detail and the fading (the
    per-frame full-resolution work) run on the device without a copy to the host."""
    from lagsplit.engine.detail import bin_frame, upsample
    from lagsplit.engine.level import tile_map

    frame = torch.rand(1024, 1024, device="cuda")
    grid = torch.rand(2, 2, device="cuda")

    def per_frame():
        gain = tile_map(grid, (1024, 1024))
        return upsample(bin_frame(frame, 8), 8, (1024, 1024), add=frame, mul=gain)

    want = per_frame()  # the first call builds the interpolation weights on the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = per_frame()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(got, want)


def test_auto_precision_is_bfloat16_on_a_gpu_that_computes_it():
    from lagsplit.engine.nets import resolve_precision

    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == want


def test_frames_uploaded_back_to_back_each_arrive_whole():
    """A resume primes the ring with uploads and no read-back in between: the pinned buffer
    is refilled only once the copy out of it is done."""
    from lagsplit.engine.cascade import Cascade

    c = Cascade(ModelConfig(lags=(4,), base_channels=4, levels=1, windows=(8,), device="cuda"), history=8,
                warmup_steps=0)
    frames = [np.full((1024, 1024), k, dtype=np.uint16) for k in range(8)]
    uploaded = [c.upload(f)[0] for f in frames]
    for k, x in enumerate(uploaded):
        assert float(x.min()) == float(x.max()) == k
