"""Small, learnable, MNIST-shaped data made on the spot for fast tests."""

from __future__ import annotations

import numpy as np


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images whose class shows as a bright band in its own rows, plus noise.

    About 80% of pixels are zero, as in MNIST, so sparse code paths are exercised.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    noise = rng.integers(0, 256, size=(n, 28, 28))
    images[noise > 235] = 90
    for i, y in enumerate(labels):
        rows = slice(2 + 2 * y, 5 + 2 * y)
        images[i, rows, 4:24] = rng.integers(150, 256, size=(3, 20))
    return images.reshape(n, 784), labels


def tiny_dataset(n_train: int = 600, n_test: int = 200, seed: int = 0):
    from fastmnist.data import Dataset, Split

    xtr, ytr = blobs(n_train, seed)
    xte, yte = blobs(n_test, seed + 1)
    return Dataset(name="synthetic", train=Split(xtr, ytr), test=Split(xte, yte))
