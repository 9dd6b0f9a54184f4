"""The PyTorch and JAX peers against the NumPy reference.

In float64 every quantity must agree with the reference to a relative error of
1e-12, measured against the largest magnitude of the reference array (elementwise
relative error is meaningless for entries that cancel to ~0). The backends differ
only in summation order and fused operations, which costs a few ulps per step, far
below that. In float32 they must agree to 1e-5 on the same scale.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastmnist import Model, get_backend
from fastmnist.optim import SGD

from .synthetic import blobs

RTOL64 = 1e-12
RTOL32 = 1e-5

reference = get_backend("numpy")


@pytest.fixture(params=["torch", "jax"])
def peer(request):
    pytest.importorskip(request.param)
    return get_backend(request.param)


def assert_close(actual, expected, rtol: float, what: str = "") -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype, what
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _model(hidden, dtype: str = "float64", seed: int = 1) -> Model:
    model = Model.initialize(hidden, dtype=dtype, rng=seed)
    rng = np.random.default_rng(seed + 100)
    for b in model.biases:  # non-zero biases so bias handling is exercised
        b[:] = rng.normal(0, 0.1, size=b.shape)
    return model


@pytest.mark.parametrize("hidden", [(16,), (12, 8)])
def test_forward_matches_reference(peer, hidden):
    x, _ = blobs(20, seed=3)
    model = _model(hidden)
    got, want = peer.forward(model, x), reference.forward(model, x)
    assert len(got) == len(want) == len(hidden) + 2
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, RTOL64, f"activation {i}")
    assert_close(peer.predict_proba(model, x), reference.predict_proba(model, x), RTOL64)


@pytest.mark.parametrize("hidden", [(16,), (12, 8)])
def test_gradients_match_reference(peer, hidden):
    x, y = blobs(24, seed=4)
    model = _model(hidden)
    got, want = peer.gradients(model, x, y), reference.gradients(model, x, y)
    assert got.loss == pytest.approx(want.loss, rel=RTOL64)
    assert_close(got.probs, want.probs, RTOL64, "probs")
    for i in range(len(model.weights)):
        assert_close(got.weights[i], want.weights[i], RTOL64, f"dW{i}")
        assert_close(got.biases[i], want.biases[i], RTOL64, f"db{i}")


def _two_epochs(backend, model: Model, optimizer: SGD, x, y, batch_size: int):
    """Two epochs with different orders and per-step rates, so state must carry over."""
    n = len(x)
    steps = -(-n // batch_size)
    results = []
    for epoch in range(2):
        order = np.random.default_rng(10 + epoch).permutation(n)
        lrs = np.linspace(0.2, 0.05, steps) / (epoch + 1)
        results.append(backend.train_epoch(model, optimizer, x, y, order, batch_size, lrs))
    return results


# Each case is a separate XLA compilation for JAX (~1 s), hence a selection, not a product.
@pytest.mark.parametrize(
    "hidden, momentum, nesterov",
    [((16,), 0.9, False), ((16,), 0.9, True), ((12, 8), 0.9, True), ((12, 8), 0.0, False)],
    ids=["1layer-heavy", "1layer-nesterov", "2layer-nesterov", "2layer-plain"],
)
def test_epochs_match_reference(peer, hidden, momentum, nesterov):
    # 50 samples in batches of 16: three full batches and a partial one of 2.
    x, y = blobs(50, seed=5)
    mine, theirs = _model(hidden), _model(hidden)
    opt_mine = SGD(momentum=momentum, nesterov=nesterov, weight_decay=1e-3)
    opt_theirs = SGD(momentum=momentum, nesterov=nesterov, weight_decay=1e-3)
    if not momentum:
        # Without momentum the velocity must be left exactly as it was.
        for opt in (opt_mine, opt_theirs):
            opt.init_state(mine.weights, mine.biases)
            for v in opt.state_arrays():
                v[...] = 0.5
    got = _two_epochs(peer, mine, opt_mine, x, y, 16)
    want = _two_epochs(reference, theirs, opt_theirs, x, y, 16)
    for g, w in zip(got, want, strict=True):
        assert g.n_samples == w.n_samples == 50
        assert g.correct == w.correct
        assert g.loss_sum == pytest.approx(w.loss_sum, rel=RTOL64)
    for i, (g, w) in enumerate(zip(mine.parameters(), theirs.parameters(), strict=True)):
        assert_close(g, w, RTOL64, f"parameter {i}")
    for i, (g, w) in enumerate(
        zip(opt_mine.state_arrays(), opt_theirs.state_arrays(), strict=True)
    ):
        assert_close(g, w, RTOL64, f"velocity {i}")
    if not momentum:
        assert all((v == 0.5).all() for v in opt_mine.state_arrays())


def test_a_single_partial_batch_matches_reference(peer):
    x, y = blobs(10, seed=11)  # fewer samples than one batch: no full step at all
    mine, theirs = _model((8,)), _model((8,))
    opt_mine, opt_theirs = SGD(0.9, True, 1e-3), SGD(0.9, True, 1e-3)
    got = _two_epochs(peer, mine, opt_mine, x, y, 16)
    want = _two_epochs(reference, theirs, opt_theirs, x, y, 16)
    for g, w in zip(got, want, strict=True):
        assert g.loss_sum == pytest.approx(w.loss_sum, rel=RTOL64)
    for g, w in zip(
        mine.parameters() + opt_mine.state_arrays(),
        theirs.parameters() + opt_theirs.state_arrays(),
        strict=True,
    ):
        assert_close(g, w, RTOL64)


def test_float32_epochs_agree_loosely(peer):
    x, y = blobs(48, seed=6)  # three full batches, no partial one
    mine, theirs = _model((16,), "float32"), _model((16,), "float32")
    opt_mine, opt_theirs = SGD(0.9, True, 1e-3), SGD(0.9, True, 1e-3)
    got = _two_epochs(peer, mine, opt_mine, x, y, 16)
    want = _two_epochs(reference, theirs, opt_theirs, x, y, 16)
    for g, w in zip(got, want, strict=True):
        assert g.loss_sum == pytest.approx(w.loss_sum, rel=RTOL32)
    for g, w in zip(
        mine.parameters() + opt_mine.state_arrays(),
        theirs.parameters() + opt_theirs.state_arrays(),
        strict=True,
    ):
        assert_close(g, w, RTOL32)  # also checks float32 stayed float32


def test_predict_proba_accepts_uint8_and_scaled_floats(peer):
    x, _ = blobs(30, seed=7)
    model = _model((16,), "float32")
    p_u8 = peer.predict_proba(model, x)
    p_float = peer.predict_proba(model, x.astype(np.float32) / np.float32(255))
    assert p_u8.shape == (30, 10) and p_u8.dtype == np.float32
    np.testing.assert_allclose(p_u8.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p_u8, p_float, rtol=1e-5, atol=1e-7)
    assert_close(p_u8, reference.predict_proba(model, x), RTOL32)


def test_data_is_converted_once_per_array(peer):
    # The configuration of test_float32_epochs_agree_loosely, so JAX compiles nothing new.
    x, y = blobs(48, seed=8)
    model, opt = _model((16,), "float32"), SGD(0.9, True, 1e-3)
    order, lrs = np.arange(48), np.full(3, 0.01)
    peer.train_epoch(model, opt, x, y, order, 16, lrs)
    first = peer._images.get(x, np.dtype(np.float32).str, lambda a: pytest.fail("reconverted"))
    peer.train_epoch(model, opt, x, y, order, 16, lrs)
    again = peer._images.get(x, np.dtype(np.float32).str, lambda a: pytest.fail("reconverted"))
    assert first is again


def test_torch_limit_threads_restores():
    torch = pytest.importorskip("torch")
    backend = get_backend("torch")
    before = torch.get_num_threads()
    with backend.limit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_jax_warmup_compiles_the_epoch_it_will_run():
    pytest.importorskip("jax")
    backend = get_backend("jax")
    x, y = blobs(20, seed=9)
    model, opt = _model((4,), "float32"), SGD(0.5, False, 1e-4)
    n_before = len(backend._executables)
    backend.warmup(model, opt, 8, n_samples=20)
    compiled = dict(backend._executables)
    assert len(compiled) == n_before + 1
    backend.train_epoch(model, opt, x, y, np.arange(20), 8, np.full(3, 0.01))
    assert backend._executables == compiled  # the epoch ran what warmup compiled


def test_jax_thread_limit_after_start_is_reported_not_silently_ignored():
    jax = pytest.importorskip("jax")
    backend = get_backend("jax")
    jax.devices()  # make sure XLA's CPU client (and its thread pool) already exists
    with backend.limit_threads(None):
        pass
    cores = len(os.sched_getaffinity(0))
    if cores < 2 or "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", ""):
        pytest.skip("XLA already runs single-threaded: any limit is met")
    with pytest.warns(RuntimeWarning, match="XLA_FLAGS"), backend.limit_threads(1):
        pass
    assert backend.thread_limit_note is not None


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_peers_refuse_what_they_do_not_implement(name):
    from fastmnist import ConfigError
    from fastmnist.backends.augment import EpochOptions
    from fastmnist.optim import Adam

    pytest.importorskip(name)
    backend = get_backend(name)
    model = Model.initialize((4,), rng=0)
    x, y = blobs(8)
    with pytest.raises(ConfigError, match="SGD"):
        backend.train_epoch(model, Adam(), x, y, np.arange(8), 8, np.array([0.1]))
    with pytest.raises(ConfigError, match="dropout"):
        backend.train_epoch(model, SGD(), x, y, np.arange(8), 8, np.array([0.1]),
                            EpochOptions(dropout=0.5))
