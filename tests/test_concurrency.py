"""Training and predicting from several Python threads gives what running alone gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastmnist
from fastmnist import available_backends

from .synthetic import tiny_dataset

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]
DATA = tiny_dataset(n_train=1000, n_test=300)


def _train(backend: str, seed: int):
    # Numba's thread count is per Python thread; BLAS limits (threadpoolctl, used by
    # the numpy backend) are process-wide, so concurrent numpy runs must not set them.
    threads = 1 if backend == "numba" else None
    model, _ = fastmnist.train(DATA, hidden=(24,), epochs=2, batch_size=32, backend=backend,
                               seed=seed, threads=threads, progress=False)
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_models_trained_at_once_equal_the_models_trained_alone(backend):
    alone = [_train(backend, seed) for seed in (0, 1)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(lambda s: _train(backend, s), (0, 1)))
    for a, b in zip(alone, together):
        for pa, pb in zip(a.parameters(), b.parameters()):
            np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_model_predicting_from_several_threads(backend):
    model = _train("numpy", 0)
    images = DATA.test.images
    expected = model.predict_proba(images, backend=backend)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: model.predict_proba(images, backend=backend), range(8)))
    for probs in results:
        np.testing.assert_array_equal(probs, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_predicting_with_models_of_different_shapes(backend):
    # The numba backend keeps each thread's inference scratch between calls: a
    # shape change, or another thread, must never see a stale or shared buffer.
    models = [fastmnist.Model.initialize(h, rng=i) for i, h in enumerate([(8,), (40,), (8, 6)])]
    images = DATA.test.images
    expected = [m.predict_proba(images, backend=backend) for m in models]
    jobs = [i % len(models) for i in range(12)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda i: models[i].predict_proba(images, backend=backend), jobs))
    for i, probs in zip(jobs, results):
        np.testing.assert_array_equal(probs, expected[i])
