"""Loading datasets: the real MNIST (when $FASTMNIST_DATA has it), the registry, Split."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from fastmnist.data import (
    DATASETS,
    FILES,
    Dataset,
    Split,
    dataset_names,
    fetch_dataset,
    find_dataset_dir,
    get_dataset_info,
    load_dataset,
)
from fastmnist.errors import ConfigError, InputError

from .conftest import make_fake_dataset

#: SHA-256 of the decompressed official MNIST files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTMNIST_DATA", str(mnist_dir))
        return load_dataset("mnist")


@pytest.mark.mnist
def test_real_mnist_shapes_and_types(mnist):
    assert mnist.name == "mnist"
    for split, n in ((mnist.train, 60000), (mnist.test, 10000)):
        assert len(split) == n
        assert split.images.shape == (n, 784) and split.images.dtype == np.uint8
        assert split.images.flags.c_contiguous
        assert split.labels.shape == (n,) and split.labels.dtype == np.uint8
        assert set(np.unique(split.labels)) == set(range(10))
        assert split.images_2d.shape == (n, 28, 28)
    assert list(mnist.train.labels[:5]) == [5, 0, 4, 1, 9]
    assert list(mnist.test.labels[:5]) == [7, 2, 1, 0, 4]


@pytest.mark.mnist
def test_real_mnist_files_decompress_to_the_official_bytes(mnist_dir):
    for stem in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{stem}.gz") as f:
            assert hashlib.sha256(f.read()).hexdigest() == MNIST_SHA256[stem]


@pytest.mark.mnist
def test_loaded_arrays_are_exactly_the_official_data(mnist):
    # Rebuilding each file from the arrays and hashing it proves nothing was dropped,
    # shifted or reordered by the reader.
    arrays = {
        "train-images-idx3-ubyte": mnist.train.images_2d,
        "train-labels-idx1-ubyte": mnist.train.labels,
        "t10k-images-idx3-ubyte": mnist.test.images_2d,
        "t10k-labels-idx1-ubyte": mnist.test.labels,
    }
    for stem, arr in arrays.items():
        header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        assert hashlib.sha256(header + arr.tobytes()).hexdigest() == MNIST_SHA256[stem], stem


@pytest.mark.mnist
def test_explicit_data_dir_beats_fastmnist_data(mnist_dir, fake_mnist_dir, monkeypatch):
    monkeypatch.setenv("FASTMNIST_DATA", str(fake_mnist_dir))
    assert len(load_dataset("mnist").train) == 60
    assert len(load_dataset("mnist", data_dir=mnist_dir).test) == 10000
    monkeypatch.setenv("FASTMNIST_DATA", str(mnist_dir))
    assert len(load_dataset("mnist", data_dir=fake_mnist_dir).train) == 60


def test_explicit_data_dir_beats_fastmnist_data_without_real_data(tmp_path, monkeypatch):
    make_fake_dataset(tmp_path / "a", n_train=11)
    make_fake_dataset(tmp_path / "b" / "mnist", n_train=13)  # the <name> subdirectory form
    monkeypatch.setenv("FASTMNIST_DATA", str(tmp_path / "a"))
    assert len(load_dataset().train) == 11
    assert len(load_dataset("mnist", tmp_path / "b").train) == 13
    assert find_dataset_dir("mnist", tmp_path / "b") == tmp_path / "b" / "mnist"
    assert fetch_dataset("mnist", tmp_path / "b") == tmp_path / "b" / "mnist"


@pytest.mark.parametrize("name", ["cifar", "", "mnist2", None, 3])
def test_unknown_dataset_name_is_a_config_error(name):
    with pytest.raises(ConfigError, match="mnist, fashion-mnist, kmnist"):
        load_dataset(name)
    with pytest.raises(ConfigError):
        fetch_dataset(name)


def test_names_are_forgiving_about_case_and_underscores():
    assert get_dataset_info("Fashion_MNIST").name == "fashion-mnist"
    assert get_dataset_info(" MNIST ").name == "mnist"


def test_registry_is_complete():
    assert dataset_names() == ("mnist", "fashion-mnist", "kmnist")
    for info in DATASETS.values():
        assert len(info.mirrors) >= 2 and all(m.endswith("/") for m in info.mirrors)
        assert sorted(info.hashes) == sorted(f"{stem}.gz" for stem in FILES)
        for h in info.hashes.values():
            algo, _, digest = h.partition(":")
            assert algo == "sha256" and len(digest) == 64 and int(digest, 16) >= 0
        assert len(info.classes) == 10
    assert DATASETS["mnist"].hashes["train-images-idx3-ubyte.gz"] == (
        "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )


def test_split_accepts_square_images_and_never_copies_uint8_rows():
    images = np.zeros((4, 784), np.uint8)
    split = Split(images, np.array([0, 1, 2, 9]))
    assert split.images is images and split.labels.dtype == np.uint8
    square = Split(np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))
    assert square.images.shape == (4, 784) and len(square) == 4
    assert np.shares_memory(square.images_2d, square.images)
    assert "n=4" in repr(square)


@pytest.mark.parametrize(
    "images, labels",
    [
        (np.zeros((4, 784), np.float32), np.zeros(4, np.uint8)),
        (np.zeros((4, 783), np.uint8), np.zeros(4, np.uint8)),
        (np.zeros((4, 784), np.uint8), np.zeros(3, np.uint8)),
        (np.zeros((4, 784), np.uint8), np.full(4, 10)),
    ],
)
def test_split_rejects_bad_arrays(images, labels):
    with pytest.raises(InputError):
        Split(images, labels)


def test_split_and_dataset_are_frozen(fake_mnist_dir):
    data = load_dataset("mnist", fake_mnist_dir)
    assert isinstance(data, Dataset) and data.classes == tuple("0123456789")
    with pytest.raises(AttributeError):
        data.train.images = None
    with pytest.raises(AttributeError):
        data.name = "x"
