"""Shared fixtures. Kept generic: other test modules add their own fixtures here.

No test may reach the internet. A session-wide guard points the dataset cache at a
temporary directory and the download mirror at a closed local port, so a test that
accidentally needs a download fails fast instead of fetching from a public mirror.
Subprocesses (the CLI tests) inherit the same environment.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens, so connecting fails at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session", autouse=True)
def _no_dataset_downloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTMNIST_CACHE", str(tmp_path_factory.mktemp("fastmnist-cache")))
        mp.setenv("FASTMNIST_MIRROR", closed_port_url())
        yield


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files, from ``$FASTMNIST_DATA``; the test is skipped without them."""
    value = os.environ.get("FASTMNIST_DATA", "").strip()
    if not value:
        pytest.skip("FASTMNIST_DATA is not set (point it at a directory of the MNIST files)")
    path = Path(value)
    missing = [f for f in MNIST_FILES if not (path / f).is_file()]
    if missing:
        pytest.skip(f"FASTMNIST_DATA={path} lacks {', '.join(missing)}")
    return path


def make_fake_dataset(
    directory: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, gz: bool = True
) -> dict[str, np.ndarray]:
    """Write four small random IDX files in the MNIST layout into ``directory``.

    Returns the arrays written, keyed by file name (as written, with or without .gz).
    """
    from fastmnist.data import write_idx

    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, arr in arrays.items():
        name = f"{stem}.gz" if gz else stem
        write_idx(directory / name, arr)
        written[name] = arr
    return written


@pytest.fixture
def fake_mnist_dir(tmp_path: Path) -> Path:
    """A directory holding a tiny random dataset (60 train, 20 test) in the MNIST layout."""
    directory = tmp_path / "fake-mnist"
    make_fake_dataset(directory)
    return directory


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path):
    """The real MNIST dataset, read once per session from ``$FASTMNIST_DATA``."""
    from fastmnist.data import load_dataset

    return load_dataset("mnist", data_dir=mnist_dir)
