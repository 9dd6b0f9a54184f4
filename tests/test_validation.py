"""Every bad input at a public entry point gets a clear error before any work starts."""

from __future__ import annotations

import numpy as np
import pytest

import fastmnist
from fastmnist import ConfigError, InputError, MLPClassifier, Model
from fastmnist.data import Dataset, Split

from .synthetic import blobs

X, Y = blobs(64, seed=0)
MODEL = Model.initialize((8,), rng=0)
FAST = dict(hidden=(8,), epochs=1, batch_size=16, backend="numpy", progress=False)


def _bad_images():
    yield "shape", X[:, :100]
    yield "shape", X.reshape(64, 28, 28, 1)
    yield "shape", X[0]
    yield "dtype", X.astype(str)
    yield "dtype", np.array([[object()] * 784] * 2)
    yield "dtype", X.astype(bool)
    yield "NaN", np.full((2, 784), np.nan)
    yield "NaN", np.full((2, 784), np.inf, dtype=np.float32)
    yield r"\[0, 1\]", X.astype(np.float32)  # floats must already be scaled
    yield r"\[0, 1\]", -X.astype(np.float64) / 255
    yield "0-255", X.astype(np.int64) + 1000
    yield "empty", np.zeros((0, 784), np.uint8)


@pytest.mark.parametrize("problem, images", list(_bad_images()))
def test_bad_images_are_refused_by_predict(problem, images):
    with pytest.raises(InputError, match=problem):
        MODEL.predict(images, backend="numpy")


@pytest.mark.parametrize("problem, images", list(_bad_images()))
def test_bad_images_are_refused_by_the_estimator(problem, images):
    with pytest.raises(InputError, match=problem):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, backend="numpy").fit(
            images, np.arange(len(images) if images.ndim else 1) % 10
        )


@pytest.mark.parametrize(
    "problem, labels",
    [
        ("0-9", np.full(64, 10)),
        ("0-9", np.full(64, -1)),
        ("64 images", Y[:10]),
        ("one-dimensional", Y.reshape(8, 8)),
        ("integers", Y + 0.5),
        ("integers", np.array(["a"] * 64)),
    ],
)
def test_bad_labels_are_refused_by_train(problem, labels):
    data = Dataset(name="x", train=Split(X, Y), test=Split(X, Y))
    object.__setattr__(data.train, "labels", labels)  # bypass Split's own checks
    with pytest.raises(InputError, match=problem):
        fastmnist.train(data, **FAST)


@pytest.mark.parametrize(
    "setting",
    [
        {"lr": -0.1}, {"lr": float("inf")}, {"lr": "fast"}, {"batch_size": 0},
        {"batch_size": 1.5}, {"epochs": 0}, {"hidden": (0,)}, {"hidden": (4, -1)},
        {"threads": 0}, {"threads": 10**6}, {"backend": "cuda"}, {"dtype": "int8"},
        {"schedule": "linear"}, {"momentum": -0.5}, {"weight_decay": -1.0},
        {"nesterov": True, "momentum": 0.0},
    ],
)
def test_bad_hyperparameters_are_refused(setting):
    with pytest.raises(ConfigError):
        fastmnist.train(Dataset(name="x", train=Split(X, Y), test=Split(X, Y)),
                        **{**FAST, **setting})


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="cifar"):
        fastmnist.load_dataset("cifar")


def test_non_contiguous_and_read_only_inputs_work():
    wide = np.zeros((64, 784 * 2), np.uint8)
    wide[:, ::2] = X
    strided = wide[:, ::2]  # non-contiguous view
    frozen = X.copy()
    frozen.setflags(write=False)
    expected = MODEL.predict_proba(X, backend="numpy")
    for images in (strided, frozen, np.asfortranarray(X), X.reshape(64, 28, 28)):
        np.testing.assert_array_equal(MODEL.predict_proba(images, backend="numpy"), expected)
    labels = Y.copy()
    labels.setflags(write=False)
    data = Dataset(name="x", train=Split(frozen, labels), test=Split(frozen, labels))
    model, _ = fastmnist.train(data, **FAST)
    assert model.is_finite()
