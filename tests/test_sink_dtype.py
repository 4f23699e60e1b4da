"""float16 components are stored with the values numpy's rounding gives (nearest even; inf
past float16's range; NaN kept), written through a real HDF5 file and read back."""
from __future__ import annotations

import h5py
import numpy as np

from lagsplit.engine.config import OutputConfig
from lagsplit.engine.contracts import RunInfo
from lagsplit.engine.frame import Decomposition, stored
from lagsplit.engine.hdf5_sink import HDF5Sink

EDGES = np.array([0.0, -0.0, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 65504.0, 65520.0, 1e6, -1e6, 6e-8, 2e-8, 1e-3,
                  np.inf, -np.inf, np.nan], np.float32)


def _f16_bits(a: np.ndarray) -> np.ndarray:
    """numpy's float16 of ``a``, as bits (past the range: inf, no warning)."""
    with np.errstate(over="ignore"):
        return a.astype(np.float16).view(np.uint16)


def _plane() -> np.ndarray:
    rng = np.random.default_rng(3)
    plane = rng.normal(0, 3000, (64, 64)).astype(np.float32)
    plane.flat[: EDGES.size] = EDGES
    return plane


def test_stored_float16_equals_numpys_rounding_bit_for_bit():
    plane = _plane()
    got = stored(plane, np.dtype(np.float16))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.view(np.uint16), _f16_bits(plane))
    frozen = plane.copy()
    frozen.flags.writeable = False  # a read-only plane takes numpy's conversion
    np.testing.assert_array_equal(stored(frozen, np.dtype(np.float16)).view(np.uint16), got.view(np.uint16))
    assert stored(plane, np.dtype(np.float32)) is plane


def test_an_hdf5_file_holds_float16_components_as_numpy_rounds_them(tmp_path):
    path = tmp_path / "f16.h5"
    sink = HDF5Sink(path, OutputConfig(path=str(path), dtype="float16"))
    sink.setup(RunInfo(shape=(64, 64), dtype="<u2", lags=(8,), source="test", config_json="{}", components=False))
    slow = _plane()
    raw = np.full((64, 64), 7, np.uint16)
    sink.append(Decomposition(index=0, timestamp=0.0, raw=raw, slow=slow, fast=-slow, components=None, residual=None,
                              model_version=0, warmup=False))
    sink.close()
    with h5py.File(path, "r") as f:
        assert f["slow"].dtype == np.float16 and f["raw"].dtype == np.uint16
        np.testing.assert_array_equal(f["slow"][0].view(np.uint16), _f16_bits(slow))
        np.testing.assert_array_equal(f["fast"][0].view(np.uint16), _f16_bits(-slow))
        np.testing.assert_array_equal(f["raw"][0], raw)
