"""The narrow-layer Numba path (one hidden layer of at most 16 units, plain SGD)
against the NumPy reference, with the bounds of :mod:`tests.test_numba_equivalence`."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmnist import Model  # noqa: E402
from fastmnist.backends import available_backends  # noqa: E402
from fastmnist.optim import SGD  # noqa: E402

from .test_numba_equivalence import (  # noqa: E402
    SETTINGS,
    _assert_same_training,
    _images,
    _labels,
    _perturbed,
    _sum_length,
    _train_both,
    assert_close,
    dtypes,
    image_kinds,
    numba_backend,
    numpy_backend,
    optimizers,
    seeds,
)

pytestmark = pytest.mark.skipif(
    "numba" not in available_backends(), reason="numba is not installed"
)

narrow_widths = st.integers(1, 16)


@pytest.fixture
def narrow_calls(monkeypatch):
    """Count the epochs the narrow kernels run."""
    from fastmnist.backends import numba_backend as module

    calls = []
    run = module._RUN_NARROW

    def counted(*args):
        calls.append(args[12])  # the hidden width
        return run(*args)

    monkeypatch.setattr(module, "_RUN_NARROW", counted)
    return calls


@pytest.mark.parametrize("width, taken", [(1, True), (10, True), (16, True), (17, False)])
def test_only_one_narrow_hidden_layer_takes_the_narrow_path(narrow_calls, width, taken):
    rng = np.random.default_rng(0)
    x, y = _images(rng, 8, "mnist"), _labels(rng, 8, False)
    for hidden in ((width,), (width, 4)):
        model = Model.initialize(hidden, rng=0)
        numba_backend.train_epoch(model, SGD(0.9), x, y, np.arange(8), 4, np.full(2, 0.1))
    assert narrow_calls == ([width] if taken else [])


@SETTINGS
@given(dtype=dtypes, width=narrow_widths, n=st.integers(1, 70), seed=seeds, kind=image_kinds)
def test_forward_and_probabilities_match(dtype, width, n, seed, kind):
    # Inference of a narrow network runs in the narrow kernels for every input,
    # dense ones included (they skip no zeros, so BLAS has no edge).
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize((width,), dtype=dtype, rng=seed), rng)
    x = _images(rng, n, kind)
    k = _sum_length(model, 0)
    got, want = numba_backend.forward(model, x), numpy_backend.forward(model, x)
    for name, g, w in zip(["X", "A1", "probs"], got, want):
        assert_close(name, g, w, dtype, k)
    assert_close("predict_proba", numba_backend.predict_proba(model, x),
                 numpy_backend.predict_proba(model, x), dtype, k)


@SETTINGS
@given(dtype=dtypes, width=narrow_widths, n=st.integers(1, 64), seed=seeds, kind=image_kinds,
       single_class=st.booleans(), optimizer=optimizers)
def test_weights_after_one_step_match(dtype, width, n, seed, kind, single_class, optimizer):
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize((width,), dtype=dtype, rng=seed), rng)
    x, y = _images(rng, n, kind), _labels(rng, n, single_class)
    results = _train_both(model, optimizer, x, y, n, np.array([0.1]))
    _assert_same_training(results, dtype, _sum_length(model, n), 1)


@SETTINGS
@given(dtype=dtypes, width=narrow_widths, batch=st.sampled_from([1, 5, 16, 32, 128]),
       steps=st.integers(3, 10), partial=st.booleans(), seed=seeds, kind=image_kinds,
       optimizer=optimizers)
def test_weights_after_an_epoch_match(dtype, width, batch, steps, partial, seed, kind, optimizer):
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize((width,), dtype=dtype, rng=seed), rng)
    n = batch * steps - (rng.integers(1, batch) if partial and batch > 1 else 0)
    x, y = _images(rng, 2 * n, kind), _labels(rng, 2 * n, False)
    order = rng.permutation(2 * n)[:n]
    lrs = np.linspace(0.1, 0.02, -(-n // batch))
    results = _train_both(model, optimizer, x, y, batch, lrs, order)
    _assert_same_training(results, dtype, _sum_length(model, batch), steps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_images_train_and_predict_like_the_reference(dtype):
    rng = np.random.default_rng(4)
    model = _perturbed(Model.initialize((10,), dtype=dtype, rng=4), rng)
    x = (_images(rng, 70, "mnist") / 255.0).astype(dtype)
    y = _labels(rng, 70, False)
    results = _train_both(model, SGD(0.9, True, 1e-3), x, y, 16, np.full(5, 0.1))
    _assert_same_training(results, dtype, _sum_length(model, 16), 5)
    assert_close("predict_proba", numba_backend.predict_proba(model, x),
                 numpy_backend.predict_proba(model, x), dtype, _sum_length(model, 0))


def _epoch(threads: int, x, y, order, batch: int) -> list[np.ndarray]:
    model = Model.initialize((10,), rng=1)
    optimizer = SGD(0.9, nesterov=True, weight_decay=1e-3)
    with numba_backend.limit_threads(threads):
        numba_backend.train_epoch(model, optimizer, x, y, order, batch,
                                  np.full(-(-len(order) // batch), 0.05))
    return model.parameters() + optimizer.state_arrays()


# Whole groups of sixteen, a last group of five, fewer than a group, a last partial batch.
@pytest.mark.parametrize("batch", [32, 37, 5, 128])
def test_weights_are_the_same_for_any_thread_count_and_run(batch):
    import numba

    rng = np.random.default_rng(1)
    x, y, order = _images(rng, 500, "mnist"), _labels(rng, 500, False), rng.permutation(500)
    counts = [1, 1] + ([2] if numba.config.NUMBA_NUM_THREADS >= 2 else [])
    runs = [_epoch(t, x, y, order, batch) for t in counts]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.mnist
def test_an_mnist_epoch_predicts_like_the_reference(mnist):
    model = Model.initialize((10,), rng=0)
    order = np.random.default_rng(0).permutation(len(mnist.train))
    lrs = np.full(-(-len(order) // 128), 0.05)
    trained = []
    for backend in (numpy_backend, numba_backend):
        m = model.copy()
        backend.train_epoch(m, SGD(0.9), mnist.train.images, mnist.train.labels, order, 128, lrs)
        trained.append(m.predict(mnist.test.images, backend="numpy"))
    agreement = float(np.mean(trained[0] == trained[1]))
    assert agreement >= 0.999, agreement
    assert float(np.mean(trained[1] == mnist.test.labels)) > 0.85
