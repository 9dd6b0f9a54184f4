"""pytest-benchmark micro-benchmarks of each backend's kernels, grouped by backend.

Run them with ``pytest benchmarks --benchmark-enable --benchmark-only``; the test
suite runs them once each with benchmarking disabled so they cannot rot.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastmnist import Model
from fastmnist.optim import SGD

from ._common import ALL_BACKENDS, available_backends, get_backend

BATCH = 128
HIDDEN = (128,)


@pytest.fixture(scope="module")
def batch():
    from tests.synthetic import blobs

    return blobs(BATCH, seed=0)


def _backend(name):
    if name not in available_backends():
        pytest.skip(f"backend {name} is not installed")
    return get_backend(name)


@pytest.fixture(params=ALL_BACKENDS)
def setup(request, batch):
    backend = _backend(request.param)
    model = Model.initialize(HIDDEN, rng=0)
    with backend.limit_threads(2):
        backend.warmup(model.copy(), SGD(0.9), BATCH)
        yield request.param, backend, model, *batch


def test_forward(benchmark, setup):
    name, backend, model, x, _ = setup
    benchmark.group = name
    probs = benchmark(backend.predict_proba, model, x)
    assert probs.shape == (BATCH, 10)


def test_loss_and_gradients(benchmark, setup):
    name, backend, model, x, y = setup
    benchmark.group = name
    grads = benchmark(backend.gradients, model, x, y)
    assert np.isfinite(grads.loss) and grads.weights[0].shape == (784, HIDDEN[0])


def test_train_step(benchmark, setup):
    name, backend, model, x, y = setup
    benchmark.group = name
    opt, order, lrs = SGD(0.9), np.arange(BATCH), np.array([0.01])
    result = benchmark(backend.train_epoch, model, opt, x, y, order, BATCH, lrs)
    assert result.n_samples == BATCH and model.is_finite()
