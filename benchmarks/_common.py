"""What the asv and pytest-benchmark suites share: the data and the backends to try."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from fastmnist import available_backends, get_backend
from fastmnist.data import load_dataset

ALL_BACKENDS = ["numpy", "numba", "torch", "jax"]

#: ``FASTMNIST_ASV_SMOKE=1`` shrinks the parameter grid to one quick point per
#: backend, so CI can run the whole suite to prove it still works.
SMOKE = os.environ.get("FASTMNIST_ASV_SMOKE") == "1"


def data_dir() -> str | None:
    """``$FASTMNIST_DATA``, else the shared data beside the repository, else the cache."""
    if os.environ.get("FASTMNIST_DATA"):
        return os.environ["FASTMNIST_DATA"]
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    return str(beside) if beside.is_dir() else None


@functools.cache
def mnist():
    """Real MNIST, loaded once per process."""
    return load_dataset("mnist", data_dir=data_dir())


def backend_or_skip(name: str):
    """The backend, or NotImplementedError, which asv reports as a skipped benchmark."""
    if name not in available_backends():
        raise NotImplementedError(f"backend {name} is not installed")
    return get_backend(name)
