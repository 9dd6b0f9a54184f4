"""The Numba backend against the NumPy reference, tensor by tensor (llm.c style).

Every check compares one named tensor and fails hard with its name, the worst
difference and the bound. Bounds are scaled by the tensor's own magnitude
``scale = max |reference|``:

* float64: ``max |numba - numpy| <= 1e-10 * scale``. Both backends do the same
  sums in different orders (sparse blocks and FMAs here, BLAS there), which
  changes a result by a few ulps of its terms, ~1e-16 relative; 1e-10 leaves
  six orders of magnitude for cancellation and the update's amplification
  while still catching any real difference (a dropped term, a wrong index).
* float32: ``max |numba - numpy| <= C * eps * sqrt(K) * steps * scale`` with
  ``eps = 2**-23``, ``K`` the total length of the sums a tensor went through
  (784 pixels, the hidden widths, the batch), ``steps`` the optimizer steps taken
  and ``C = 16``. Rounding errors of a length-``K`` sum in different orders
  behave like a random walk, ``~eps * sqrt(K)`` relative to the terms; ``C``
  covers cancellation (terms larger than the result) and the few layers the
  error flows through; ``steps`` the growth from one step to the next.

The property-based tests draw shapes with hypothesis (deterministically, so a
run is reproducible): batches of 1 and sizes that leave a partial last batch,
1-3 hidden layers of width 1-300, both dtypes, several seeds, batches of a
single class, and images that are all zero or have no zero pixel at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmnist import Model, get_backend  # noqa: E402
from fastmnist.backends import available_backends  # noqa: E402
from fastmnist.optim import SGD  # noqa: E402

pytestmark = pytest.mark.skipif(
    "numba" not in available_backends(), reason="numba is not installed"
)

numpy_backend = get_backend("numpy")
numba_backend = get_backend("numba") if "numba" in available_backends() else None

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------
# Comparison helpers
# ---------------------------------------------------------------------------


def _bound(dtype: np.dtype, scale: float, k: int, steps: int = 1) -> float:
    """The largest difference allowed for a tensor of magnitude ``scale`` (see module doc)."""
    if np.dtype(dtype) == np.float64:
        return 1e-10 * scale
    return 16 * float(np.finfo(np.float32).eps) * np.sqrt(k) * steps * scale


def assert_close(name: str, got, want, dtype, k: int, steps: int = 1) -> None:
    """Fail with the tensor's name unless ``got`` matches ``want`` within :func:`_bound`."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != reference {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != reference {want.dtype}"
    assert np.isfinite(got).all(), f"{name}: non-finite values"
    scale = float(np.abs(want).max()) if want.size else 0.0
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    bound = _bound(dtype, scale, k, steps)
    assert diff <= bound, (
        f"{name}: max |numba - numpy| = {diff:.3g} > bound {bound:.3g} (scale {scale:.3g})"
    )


def _sum_length(model: Model, batch: int) -> int:
    """``K`` of the module doc: the lengths of the sums along the forward and backward pass."""
    return sum(model.sizes[:-1]) + batch


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _images(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """uint8 images: "mnist" (about 80 % zeros, a few all-zero rows), "zero" or "dense"."""
    if kind == "zero":
        return np.zeros((n, 784), np.uint8)
    if kind == "dense":  # no zero pixel at all
        return rng.integers(1, 256, (n, 784), dtype=np.uint8)
    x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    x[rng.random((n, 784)) < 0.8] = 0
    x[rng.random(n) < 0.2] = 0  # some blank images
    return x


def _labels(rng: np.random.Generator, n: int, single_class: bool) -> np.ndarray:
    if single_class:
        return np.full(n, rng.integers(0, 10), np.uint8)
    return rng.integers(0, 10, n, dtype=np.uint8)


def _perturbed(model: Model, rng: np.random.Generator) -> Model:
    """The model with nonzero biases, so the bias paths are exercised from the start."""
    model = model.copy()
    for b in model.biases:
        b[:] = rng.normal(0, 0.1, b.shape)
    return model


dtypes = st.sampled_from(["float32", "float64"])
hidden_layers = st.lists(st.integers(1, 300), min_size=1, max_size=3)
seeds = st.integers(0, 2**16)
image_kinds = st.sampled_from(["mnist", "mnist", "zero", "dense"])


# ---------------------------------------------------------------------------
# Step-level equivalence
# ---------------------------------------------------------------------------


@SETTINGS
@given(dtype=dtypes, hidden=hidden_layers, n=st.integers(1, 70), seed=seeds, kind=image_kinds)
def test_forward_and_probabilities_match(dtype, hidden, n, seed, kind):
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize(hidden, dtype=dtype, rng=seed), rng)
    x = _images(rng, n, kind)
    k = _sum_length(model, 0)
    want = numpy_backend.forward(model, x)
    got = numba_backend.forward(model, x)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(f"activation {i}", g, w, dtype, k)
    assert_close("predict_proba", numba_backend.predict_proba(model, x),
                 numpy_backend.predict_proba(model, x), dtype, k)


@SETTINGS
@given(dtype=dtypes, hidden=hidden_layers, n=st.integers(1, 70), seed=seeds, kind=image_kinds,
       single_class=st.booleans())
def test_loss_and_every_gradient_match(dtype, hidden, n, seed, kind, single_class):
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize(hidden, dtype=dtype, rng=seed), rng)
    x, y = _images(rng, n, kind), _labels(rng, n, single_class)
    want = numpy_backend.gradients(model, x, y)
    got = numba_backend.gradients(model, x, y)
    k = _sum_length(model, n)
    assert_close("loss", np.float64(got.loss), np.float64(want.loss), dtype, k)
    assert_close("probs", got.probs, want.probs, dtype, k)
    for i, (g, w) in enumerate(zip(got.weights, want.weights)):
        assert_close(f"dW{i}", g, w, dtype, k)
    for i, (g, w) in enumerate(zip(got.biases, want.biases)):
        assert_close(f"db{i}", g, w, dtype, k)


def _train_both(model, optimizer, x, y, batch_size, lrs, order=None):
    """Train copies of ``model`` and ``optimizer`` one epoch with each backend."""
    order = np.arange(len(x)) if order is None else order
    results = []
    for backend in (numpy_backend, numba_backend):
        m = model.copy()
        opt = SGD(optimizer.momentum, optimizer.nesterov, optimizer.weight_decay)
        r = backend.train_epoch(m, opt, x, y, order, batch_size, lrs)
        results.append((m, opt, r))
    return results


def _assert_same_training(results, dtype, k, steps):
    (m_ref, opt_ref, r_ref), (m, opt, r) = results
    assert r.n_samples == r_ref.n_samples
    for i, (g, w) in enumerate(zip(m.weights, m_ref.weights)):
        assert_close(f"W{i}", g, w, dtype, k, steps)
    for i, (g, w) in enumerate(zip(m.biases, m_ref.biases)):
        assert_close(f"b{i}", g, w, dtype, k, steps)
    for i, (g, w) in enumerate(zip(opt.state_arrays(), opt_ref.state_arrays())):
        assert_close(f"velocity {i}", g, w, dtype, k, steps)
    assert_close("loss_sum", np.float64(r.loss_sum), np.float64(r_ref.loss_sum), dtype, k, steps)
    # An argmax may flip where two probabilities tie to within rounding.
    assert abs(r.correct - r_ref.correct) <= max(1, r.n_samples // 100), (r.correct, r_ref.correct)


optimizers = st.builds(
    lambda momentum, nesterov, wd: SGD(momentum, nesterov and momentum > 0, wd),
    st.sampled_from([0.0, 0.5, 0.9]),
    st.booleans(),
    st.sampled_from([0.0, 1e-3, 5e-2]),
)


@SETTINGS
@given(dtype=dtypes, hidden=hidden_layers, n=st.integers(1, 64), seed=seeds, kind=image_kinds,
       single_class=st.booleans(), optimizer=optimizers)
def test_weights_after_one_step_match(dtype, hidden, n, seed, kind, single_class, optimizer):
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize(hidden, dtype=dtype, rng=seed), rng)
    x, y = _images(rng, n, kind), _labels(rng, n, single_class)
    results = _train_both(model, optimizer, x, y, n, np.array([0.1]))
    _assert_same_training(results, dtype, _sum_length(model, n), 1)


@SETTINGS
@given(dtype=dtypes, hidden=hidden_layers, batch=st.sampled_from([1, 5, 16, 32]),
       steps=st.integers(3, 10), partial=st.booleans(), seed=seeds, kind=image_kinds,
       nesterov=st.booleans())
def test_weights_after_an_epoch_match(dtype, hidden, batch, steps, partial, seed, kind, nesterov):
    rng = np.random.default_rng(seed)
    model = _perturbed(Model.initialize(hidden, dtype=dtype, rng=seed), rng)
    # A partial last batch when asked for (and possible).
    n = batch * steps - (rng.integers(1, batch) if partial and batch > 1 else 0)
    x, y = _images(rng, 2 * n, kind), _labels(rng, 2 * n, False)
    order = rng.permutation(2 * n)[:n]  # a subset, in shuffled order
    lrs = np.linspace(0.1, 0.02, -(-n // batch))
    optimizer = SGD(0.9, nesterov, 1e-3)
    results = _train_both(model, optimizer, x, y, batch, lrs, order)
    _assert_same_training(results, dtype, _sum_length(model, batch), steps)


def test_a_network_without_hidden_layers_trains_like_the_reference():
    dtype = "float32"  # one dtype: each compiles cold in CI, and the layout is what is tested
    # 784-10 (softmax regression): the first layer is the last, so its parts
    # add up into the logits themselves.
    rng = np.random.default_rng(3)
    model = _perturbed(Model.initialize((), dtype=dtype, rng=3), rng)
    batch, n = 16, 16 * 5 - 3  # a partial last batch
    x, y = _images(rng, 2 * n, "mnist"), _labels(rng, 2 * n, False)
    order = rng.permutation(2 * n)[:n]
    lrs = np.linspace(0.1, 0.02, -(-n // batch))
    results = _train_both(model, SGD(0.9, False, 1e-3), x, y, batch, lrs, order)
    _assert_same_training(results, dtype, _sum_length(model, batch), 5)
    assert_close("probabilities", numba_backend.predict_proba(model, x),
                 numpy_backend.predict_proba(model, x), dtype, _sum_length(model, batch))


# ---------------------------------------------------------------------------
# Inputs given as floats, warmup, threads
# ---------------------------------------------------------------------------


def test_warmup_changes_nothing():
    model = Model.initialize((16,), rng=0)
    optimizer = SGD(0.9, weight_decay=1e-3)
    optimizer.init_state(model.weights, model.biases)
    before = [p.copy() for p in model.parameters() + optimizer.state_arrays()]
    numba_backend.warmup(model, optimizer, 32)
    for a, b in zip(before, model.parameters() + optimizer.state_arrays()):
        np.testing.assert_array_equal(a, b)


def _epoch(threads: int | None, seed: int = 0, hidden=(50,)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    model = Model.initialize(hidden, rng=seed)
    optimizer = SGD(0.9, nesterov=True, weight_decay=1e-3)
    x, y = _images(rng, 500, "mnist"), _labels(rng, 500, False)
    with numba_backend.limit_threads(threads):
        numba_backend.train_epoch(model, optimizer, x, y, rng.permutation(500), 32,
                                  np.full(16, 0.05))
    return model.parameters() + optimizer.state_arrays()


def test_a_fixed_thread_count_gives_identical_weights_run_to_run():
    first, second = _epoch(2), _epoch(2)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_the_thread_count_does_not_change_the_weights():
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba allows only one thread here")
    for hidden in ((50,), (30, 20, 10)):
        one, two = _epoch(1, hidden=hidden), _epoch(2, hidden=hidden)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)


def test_limit_threads_restores_the_thread_count():
    import numba

    before = numba.get_num_threads()
    with numba_backend.limit_threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with numba_backend.limit_threads(None):
        assert numba.get_num_threads() == before


@pytest.mark.parametrize("width", [24, 10])  # the general and the narrow kernels
def test_non_contiguous_parameters_are_updated_in_place(width):
    rng = np.random.default_rng(5)
    x, y = _images(rng, 64, "mnist"), _labels(rng, 64, False)
    c_model = Model.initialize((width,), dtype="float64", rng=5)
    f_model = c_model.copy()
    f_model.weights = [np.asfortranarray(w) for w in f_model.weights]
    views = list(f_model.weights)
    for m in (c_model, f_model):
        numba_backend.train_epoch(m, SGD(0.9), x, y, np.arange(64), 16, np.full(4, 0.1))
    assert all(a is b for a, b in zip(views, f_model.weights))
    for a, b in zip(c_model.parameters(), f_model.parameters()):
        np.testing.assert_array_equal(a, b)


def test_out_of_range_indices_are_refused():
    from fastmnist.errors import InputError

    model = Model.initialize((8,), rng=0)
    x, y = np.zeros((4, 784), np.uint8), np.zeros(4, np.uint8)
    with pytest.raises(InputError):
        numba_backend.train_epoch(model, SGD(0.9), x, y + 10, np.arange(4), 2, np.ones(2))
    with pytest.raises(InputError):
        numba_backend.train_epoch(model, SGD(0.9), x, y, np.arange(1, 5), 2, np.ones(2))
    with pytest.raises(InputError):
        numba_backend.train_epoch(model, SGD(0.9), x, y, np.arange(4), 2, np.ones(1))


def test_auto_backend_is_numba():
    assert get_backend("auto").name == "numba"


def test_importing_compiles_nothing():
    code = (
        "import numba.core.registry as r\n"
        "import fastmnist, fastmnist.backends.numba_backend as nb\n"
        "from fastmnist.backends import _numba_kernels as k\n"
        "ds = [v for v in vars(k).values() if hasattr(v, 'signatures')]\n"
        "assert ds and not any(d.signatures for d in ds), [d for d in ds if d.signatures]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------
# Real MNIST
# ---------------------------------------------------------------------------


@pytest.mark.mnist
@pytest.mark.slow
def test_one_mnist_epoch_predicts_like_the_reference():
    if not os.environ.get("FASTMNIST_DATA", "").strip():
        pytest.skip("FASTMNIST_DATA is not set")
    from fastmnist.data import load_dataset

    data = load_dataset("mnist")
    model = Model.initialize((128,), dtype="float32", rng=0)
    order = np.random.default_rng(0).permutation(len(data.train.images))
    lrs = np.full(-(-len(order) // 128), 0.05)
    predictions = []
    for backend in (numpy_backend, numba_backend):
        m = model.copy()
        backend.train_epoch(m, SGD(0.9), data.train.images, data.train.labels, order, 128, lrs)
        predictions.append(backend.predict_proba(m, data.test.images).argmax(axis=1))
    agreement = float((predictions[0] == predictions[1]).mean())
    assert agreement >= 0.999, agreement


def test_dense_inputs_are_predicted_through_blas():
    # The kernel's own dense path is checked through forward() above; here the
    # dispatch: sparse images take the kernel, mostly nonzero ones the reference.
    from fastmnist.backends import numba_backend as nb_module

    rng = np.random.default_rng(5)
    model = Model.initialize((24,), dtype="float64", rng=5)  # wider than the narrow kernels take
    sparse, dense = _images(rng, 300, "mnist"), _images(rng, 300, "dense")
    assert not nb_module._mostly_nonzero(sparse) and nb_module._mostly_nonzero(dense)
    np.testing.assert_array_equal(numba_backend.predict_proba(model, dense),
                                  numpy_backend.predict_proba(model, dense))
    assert_close("predict_proba", numba_backend.predict_proba(model, sparse),
                 numpy_backend.predict_proba(model, sparse), "float64", _sum_length(model, 0))


@pytest.mark.parametrize("width", [24, 10])  # the general and the narrow kernels
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predictions_spanning_several_kernel_calls_match(dtype, width):
    # Inference runs in chunks of _PREDICT_CHUNK images, the last one partial.
    from fastmnist.backends import numba_backend as nb_module

    rng = np.random.default_rng(6)
    n = 2 * nb_module._PREDICT_CHUNK + 37
    model = _perturbed(Model.initialize((width,), dtype=dtype, rng=6), rng)
    x = _images(rng, n, "mnist")
    assert_close("predict_proba", numba_backend.predict_proba(model, x),
                 numpy_backend.predict_proba(model, x), dtype, _sum_length(model, 0))
    hidden = numba_backend.forward(model, x)[1]
    assert_close("hidden activations", hidden, numpy_backend.forward(model, x)[1], dtype,
                 _sum_length(model, 0))


# A whole training in a child process: the first layer's weights of a 784-64-10
# and of a 784-10-10 network (the fast and the narrow kernels) after three epochs
# of SGD with momentum on fixed random sparse images. It reports how many kernel
# signatures it compiled and how many it loaded from Numba's cache.
_TRAIN_IN_CHILD = """
import json, sys
import numpy as np
from fastmnist.backends import get_backend, _numba_kernels, _numba_narrow
from fastmnist.model import Model
from fastmnist.optim import SGD
rng = np.random.default_rng(0)
images = (rng.integers(1, 256, (640, 784)) * (rng.random((640, 784)) < 0.2)).astype(np.uint8)
labels = rng.integers(0, 10, 640).astype(np.uint8)
backend = get_backend("numba")
weights = {}
for width in (64, 10):
    model, opt = Model.initialize((width,), rng=0), SGD(momentum=0.9)
    with backend.limit_threads(2):
        for epoch in range(3):
            order = np.random.default_rng(epoch).permutation(640)
            backend.train_epoch(model, opt, images, labels, order, 32, np.full(20, 0.05))
    weights[str(width)] = model.weights[0]
np.savez(sys.argv[1], **weights)
kernels = (_numba_kernels.run_batches, _numba_narrow.run_narrow)
print(json.dumps({"compiled": sum(sum(k.stats.cache_misses.values()) for k in kernels),
                  "loaded": sum(sum(k.stats.cache_hits.values()) for k in kernels)}))
"""


def _train_in_child(out, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", _TRAIN_IN_CHILD, str(out)], env=env,
                          check=True, timeout=600, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out)


def test_a_process_that_finds_the_cache_empty_and_one_that_finds_it_filled_agree(
        tmp_path):
    """The same seed gives the same weights whatever the state of Numba's cache.

    The first child starts with an empty cache, the second finds it filled.
    Compiled code rounds differently from cached code (their weights differed
    by 4.5e-8 here), so the first child has the kernels compiled by a process
    of its own and loads them from the cache, as the second does
    (``fastmnist.backends._jit.CachedEntry``): neither compiles in-process.
    """
    cache = tmp_path / "cache"
    first, first_weights = _train_in_child(tmp_path / "w0.npz", cache)
    assert any(cache.rglob("*run_batches*.nbc")) and any(cache.rglob("*run_narrow*.nbc"))
    second, second_weights = _train_in_child(tmp_path / "w1.npz", cache)
    assert first == second == {"compiled": 0, "loaded": 2}
    for width in ("64", "10"):
        a, b = first_weights[width], second_weights[width]
        assert np.isfinite(a).all() and np.abs(a).max() > 0
        assert np.array_equal(a, b), f"784-{width}-10: max difference {np.abs(a - b).max():g}"
