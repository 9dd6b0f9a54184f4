"""pytest-benchmark timings of reading data: the IDX reader and a whole dataset.

The test suite runs each once with benchmarking disabled; the speeds are only
ever measured here, never asserted in a test.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from fastmnist.data import load_dataset, read_idx, write_idx

from ._common import data_dir


@pytest.fixture(scope="module", params=["raw", "gzip"])
def idx_file(request, tmp_path_factory):
    """60,000 MNIST-sparse random images as one IDX file, raw or gzipped."""
    images = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    images[images < 200] = 0
    path = tmp_path_factory.mktemp("idx") / "images-idx3-ubyte"
    write_idx(path, images)
    if request.param == "gzip":
        gz = path.with_name(path.name + ".gz")
        gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1, mtime=0))
        path = gz
    return path, images


def test_read_60k_images(benchmark, idx_file):
    path, images = idx_file
    back = benchmark(read_idx, path)
    assert np.array_equal(back, images)


def test_load_mnist(benchmark):
    directory = data_dir()
    if directory is None:
        pytest.skip("no MNIST files (set FASTMNIST_DATA)")
    data = benchmark(load_dataset, "mnist", directory)
    assert len(data.train) == 60000 and len(data.test) == 10000
