"""The general fused Numba epoch kernel against the NumPy reference, tensor by tensor.

Each case trains a few mini-batches twice from the same start, once with
``NumpyBackend.train_epoch`` and once with
:func:`fastmnist.backends._numba_general.train_epoch_general`, then compares
every weight, bias and optimizer state array, the loss sum, the number of
correct predictions and Adam's step count. Any mismatch fails the test.

Tolerances
----------
The kernel sums in a different order from BLAS and NumPy (sparse, blocked,
vectorised with FMAs), so parameters agree to rounding, not to the bit. Each
tensor is compared as ``max|ours - ref| <= rtol * max|ref|``:

* float64: ``rtol = 1e-10``. A few epochs' worth of steps accumulate errors of
  a few ulps of the largest terms (observed ~1e-15); 1e-10 leaves five orders
  of magnitude of slack and still catches any wrong term, cast or step.
* float32: ``rtol = 256 * eps32`` (3e-5). Sums run over up to 784 terms and
  errors compound over the steps (observed ~1e-6 at worst).

Adam divides the gradient by ``sqrt(v) + eps``: where a gradient sum nearly
cancels to ``|g| ~ eps``, rounding noise of order ``eps_dtype * sum|terms|`` is
amplified by ``1 / eps``. In float64 with ``eps = 1e-8`` that is still ~1e-9
of a step; in float32 it can be a sizeable fraction of a step, so float32 Adam
cases use ``eps = 1e-3``, where the amplification is harmless. The update is
the same source compiled for both dtypes, so the float64 cases check the
formula with the default ``eps``.

Both sides see exactly the same dropout masks (the same hash), shifts and
labels; a ReLU unit sitting within rounding of zero could still flip its mask
and change a gradient, which is why the examples are derandomised: a drawn
case that passes once passes every time.

Threads
-------
The comparisons run on one Numba thread with the work split into two shares
(``n_threads=2``), so they exercise the split logic without needing a free
core: on a shared machine a parallel region waits for its slowest thread, and
a descheduled one stalls every phase. The kernel's results do not depend on
the thread count, which ``test_bit_identical_for_any_thread_count`` checks
with one and two real threads and an uneven split into three shares.
"""

from __future__ import annotations

import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmnist import Model
from fastmnist.backends._numba_general import train_epoch_general
from fastmnist.backends.augment import EpochOptions
from fastmnist.backends.numpy_backend import NumpyBackend
from fastmnist.optim import SGD, Adam

from .synthetic import blobs

RTOL = {"float64": 1e-10, "float32": 256 * float(np.finfo(np.float32).eps)}

#: Optimizer settings by name: (factory given the dtype, learning-rate range).
OPTIMIZERS = {
    "sgd": (lambda dt: SGD(momentum=0.0), (0.05, 0.2)),
    "sgd_wd": (lambda dt: SGD(momentum=0.0, weight_decay=1e-2), (0.05, 0.2)),
    "momentum_wd": (lambda dt: SGD(momentum=0.9, weight_decay=1e-3), (0.02, 0.1)),
    "nesterov": (lambda dt: SGD(momentum=0.8, nesterov=True), (0.02, 0.1)),
    "nesterov_wd": (lambda dt: SGD(momentum=0.9, nesterov=True, weight_decay=5e-3), (0.02, 0.1)),
    "adam": (lambda dt: Adam(eps=_adam_eps(dt)), (1e-3, 1e-2)),
    "adam_l2": (lambda dt: Adam(weight_decay=1e-2, eps=_adam_eps(dt)), (1e-3, 1e-2)),
    "adamw": (lambda dt: Adam(weight_decay=5e-2, decoupled=True, eps=_adam_eps(dt)),
              (1e-3, 1e-2)),
}


@pytest.fixture(autouse=True)
def _one_thread():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def _adam_eps(dtype: str) -> float:
    """Adam's eps for a test in ``dtype``; see the module docstring for why."""
    return 1e-8 if dtype == "float64" else 1e-3


def _case(hidden, dtype, opt_name, dropout, smoothing, shift, batch, n, seed):
    """Everything one comparison needs: model, two optimizers, data, order, lrs, options."""
    rng = np.random.default_rng(seed)
    x, y = blobs(n, seed)
    order = rng.permutation(n)
    if n > 3:  # a sample seen twice in an epoch must still work
        order[-1] = order[0]
    make, (lo, hi) = OPTIMIZERS[opt_name]
    steps = -(-n // batch)
    lrs = rng.uniform(lo, hi, steps)
    shifts = rng.integers(-shift, shift + 1, (n, 2)).astype(np.int8) if shift else None
    options = EpochOptions(dropout=dropout, label_smoothing=smoothing, shifts=shifts,
                           seed=int(rng.integers(0, 2**63 - 1)))
    model = Model.initialize(hidden, dtype=dtype, rng=seed)
    for b in model.biases:  # nonzero biases, so their gradients and updates matter
        b[:] = rng.normal(0, 0.05, b.shape)
    return model, make(dtype), make(dtype), x, y, order, batch, lrs, options


def _assert_close(name, ours, ref, rtol):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, name
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ref.size else 0.0
    assert np.isfinite(ours).all() == np.isfinite(ref).all(), name
    assert err <= rtol * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g} (rtol {rtol:g})"


def _compare(hidden, dtype, opt_name, dropout, smoothing, shift, batch, n, seed):
    model, opt_ref, opt, x, y, order, batch, lrs, options = _case(
        hidden, dtype, opt_name, dropout, smoothing, shift, batch, n, seed)
    ours_model = model.copy()
    ref = NumpyBackend().train_epoch(model, opt_ref, x, y, order, batch, lrs, options)
    loss_sum, correct = train_epoch_general(ours_model, opt, x, y, order, batch, lrs, options,
                                            n_threads=2)
    rtol = RTOL[dtype]
    for i, (a, b) in enumerate(zip(ours_model.parameters(), model.parameters())):
        _assert_close(f"param {i}", a, b, rtol)
    for i, (a, b) in enumerate(zip(opt.state_arrays(), opt_ref.state_arrays())):
        _assert_close(f"optimizer state {i}", a, b, rtol)
    assert opt.step == opt_ref.step
    assert correct == ref.correct
    assert abs(loss_sum - ref.loss_sum) <= rtol * max(abs(ref.loss_sum), 1.0)


# Every feature combination, on one small shape per dtype: optimizer x dropout
# x label smoothing x shifts x dtype.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_every_feature_combination(opt_name, dropout, smoothing, shift, dtype):
    _compare((24, 13), dtype, opt_name, dropout, smoothing, shift, batch=7, n=26, seed=3)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(["float64", "float32"]),
    hidden=st.lists(st.integers(1, 300), min_size=1, max_size=3).map(tuple),
    opt_name=st.sampled_from(list(OPTIMIZERS)),
    dropout=st.sampled_from([0.0, 0.3]),
    smoothing=st.sampled_from([0.0, 0.1]),
    shift=st.sampled_from([0, 2]),
    batch=st.integers(1, 20),
    n_batches=st.integers(2, 6),
    last=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(dtype, hidden, opt_name, dropout, smoothing, shift, batch,
                           n_batches, last, seed):
    """Random shapes; ``last`` sets the size of a final (often partial) batch."""
    n = batch * (n_batches - 1) + min(last, batch)
    _compare(hidden, dtype, opt_name, dropout, smoothing, shift, batch, n, seed)


def test_no_hidden_layer():
    _compare((), "float64", "nesterov_wd", 0.0, 0.1, 2, batch=5, n=17, seed=1)


def test_float_images_are_taken_as_scaled():
    model, opt_ref, opt, x, y, order, batch, lrs, options = _case(
        (9,), "float64", "adam", 0.3, 0.1, 2, 4, 14, 5)
    ours_model = model.copy()
    scaled = x / 255.0
    NumpyBackend().train_epoch(model, opt_ref, scaled, y, order, batch, lrs, options)
    train_epoch_general(ours_model, opt, scaled, y, order, batch, lrs, options)
    for a, b in zip(ours_model.parameters(), model.parameters()):
        _assert_close("param", a, b, RTOL["float64"])


def test_adam_step_advances_once_per_batch_and_state_persists():
    """Two epochs in a row: the bias corrections must use the running step count."""
    model, opt_ref, opt, x, y, order, batch, lrs, options = _case(
        (16,), "float64", "adamw", 0.3, 0.0, 0, 6, 20, 7)
    ours_model = model.copy()
    for _ in range(2):
        NumpyBackend().train_epoch(model, opt_ref, x, y, order, batch, lrs, options)
        train_epoch_general(ours_model, opt, x, y, order, batch, lrs, options)
    assert opt.step == opt_ref.step == 8
    for a, b in zip(ours_model.parameters() + opt.state_arrays(),
                    model.parameters() + opt_ref.state_arrays()):
        _assert_close("tensor", a, b, RTOL["float64"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt_name", ["nesterov_wd", "adamw"])
def test_bit_identical_for_any_thread_count(dtype, opt_name):
    """No sum is split between threads: 1, 2 (and an uneven 3) give the same bits."""
    results = []
    for threads in (1, 2, 3):
        model, _, opt, x, y, order, batch, lrs, options = _case(
            (40, 33), dtype, opt_name, 0.3, 0.1, 2, 9, 58, 11)
        if threads <= numba.config.NUMBA_NUM_THREADS:
            numba.set_num_threads(threads)  # the autouse fixture restores it
            out = train_epoch_general(model, opt, x, y, order, batch, lrs, options)
        else:  # more shares than threads: the split alone changes
            out = train_epoch_general(model, opt, x, y, order, batch, lrs, options,
                                      n_threads=threads)
        results.append((out, [p.copy() for p in model.parameters() + opt.state_arrays()]))
    (out0, tensors0), *rest = results
    for out, tensors in rest:
        assert out == out0
        for a, b in zip(tensors, tensors0):
            assert np.array_equal(a, b)


def test_empty_order_is_a_no_op():
    model = Model.initialize((5,), dtype="float32", rng=0)
    before = [p.copy() for p in model.parameters()]
    x, y = blobs(4)
    opt = Adam()
    assert train_epoch_general(model, opt, x, y, np.arange(0), 4, np.zeros(0)) == (0.0, 0)
    assert opt.step == 0
    assert all(np.array_equal(a, b) for a, b in zip(model.parameters(), before))


def test_import_compiles_nothing():
    code = (
        "import fastmnist.backends._numba_general as g\n"
        "from numba.core.registry import CPUDispatcher\n"
        "ds = [v for v in vars(g).values() if isinstance(v, CPUDispatcher)]\n"
        "assert len(ds) >= 7 and not any(d.signatures for d in ds), ds\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("bad", ["label", "order", "batch"])
def test_bad_indices_raise_before_the_kernel(bad):
    model = Model.initialize((5,), dtype="float32", rng=0)
    x, y = blobs(8)
    order, batch = np.arange(8), 4
    if bad == "label":
        y = y.astype(np.int64)
        y[3] = 10
    elif bad == "order":
        order = order + 1
    else:
        batch = 0
    with pytest.raises(ValueError):
        train_epoch_general(model, SGD(), x, y, order, batch, np.ones(2))


def test_warmup_builds_the_general_kernels_for_regularised_epochs():
    # A fresh process, so that nothing else compiled the kernel first.
    code = (
        "import numpy as np\n"
        "import fastmnist.backends._numba_general as g\n"
        "from fastmnist import Model, get_backend\n"
        "from fastmnist.backends.augment import EpochOptions\n"
        "from fastmnist.optim import SGD\n"
        "model = Model.initialize((6,), dtype='float32', rng=0)\n"
        "before = [p.copy() for p in model.parameters()]\n"
        "opts = EpochOptions(dropout=0.2, shifts=np.zeros((5, 2), np.int8))\n"
        "get_backend('numba').warmup(model, SGD(0.9), 4, options=opts)\n"
        "assert g._run_epoch.signatures\n"
        "assert all((a == b).all() for a, b in zip(before, model.parameters()))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
