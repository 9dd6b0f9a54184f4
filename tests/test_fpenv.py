"""Flush-to-zero inside the Numba kernels, and only there."""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist.backends import _fpenv, get_backend
from fastmnist.backends.augment import EpochOptions
from fastmnist.model import Model
from fastmnist.optim import SGD

TINY32 = np.finfo(np.float32).tiny

pytestmark = pytest.mark.skipif(not _fpenv.ACTIVE, reason="flush-to-zero is x86-64 only")


def _caller_keeps_subnormals() -> bool:
    return bool(np.float32(TINY32) * np.float32(0.5) != 0)


def _decay_velocities(backend: str, threads: int, sizes: tuple[int, ...],
                      options: EpochOptions | None) -> SGD:
    """Train on black images, so every first-layer gradient is zero and its
    velocity only shrinks by the momentum, from just above the smallest normal
    float32 into the subnormal range: ten steps, 2 * TINY32 * 0.9**10 = 0.7 * TINY32."""
    model = Model.initialize(sizes, dtype="float32", rng=0)
    opt = SGD(momentum=0.9)
    opt.init_state(model.weights, model.biases)
    opt.velocity_w[0][...] = 2 * TINY32
    images = np.zeros((40, 784), dtype=np.uint8)
    labels = np.arange(40, dtype=np.uint8) % 10
    with get_backend(backend).limit_threads(threads):
        get_backend(backend).train_epoch(model, opt, images, labels, np.arange(40), 4,
                                         np.full(10, 0.1), options)
    return opt


# The narrow, the fast and the general kernels (label smoothing takes the last).
@pytest.mark.parametrize(
    ("sizes", "options"),
    [((10,), None), ((64,), None), ((32, 16), None), ((64,), EpochOptions(label_smoothing=0.1))],
    ids=["narrow", "fast", "deep", "general"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_flush_subnormal_velocities_to_zero(sizes, options, threads):
    reference = _decay_velocities("numpy", 1, sizes, options).velocity_w[0]
    assert np.all((reference > 0) & (reference < TINY32))  # subnormal in the reference
    fast = _decay_velocities("numba", threads, sizes, options).velocity_w[0]
    assert np.all(fast == 0)
    # The whole difference is below the smallest normal number.
    assert np.max(np.abs(fast - reference)) < TINY32


@pytest.mark.parametrize("threads", [1, 2])
def test_the_callers_floating_point_state_is_restored(threads):
    backend = get_backend("numba")
    model = Model.initialize((64,), dtype="float32", rng=0)
    images = np.random.default_rng(0).integers(0, 256, (64, 784), dtype=np.uint8)
    with backend.limit_threads(threads):
        backend.train_epoch(model, SGD(), images, np.arange(64, dtype=np.uint8) % 10,
                            np.arange(64), 16, np.full(4, 0.01))
        backend.predict_proba(model, images)
    assert _caller_keeps_subnormals()
