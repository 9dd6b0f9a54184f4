"""The sixteen-wide row intrinsics: each lane rounded as the scalar operation rounds it (the
softmax within a few ulp of the exact one), and no lane outside the row written."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from numba import njit

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmnist.backends._rows16 import (  # noqa: E402
    LANES,
    add_rows,
    axpy_row,
    copy_row,
    divide_row,
    mask_row,
    relu_row,
    softmax_row,
)


@njit(cache=False)
def _axpy(y, yr, yc, v, x, xr, xc):
    axpy_row(y, yr, yc, v, x, xr, xc)


def _half_ulp(value) -> Fraction:
    """Half the gap from ``value`` to the next representable number away from zero."""
    away = np.nextafter(value, np.inf if value >= 0 else -np.inf)
    return abs(Fraction(float(away)) - Fraction(float(value))) / 2


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_axpy_row_is_one_rounded_multiply_add_per_lane(data, dtype):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    rows, cols = data.draw(st.integers(1, 4)), LANES + data.draw(st.integers(0, 40))
    y = (rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-3, 4, (rows, cols)))
    x = rng.standard_normal((rows + 1, cols))
    y, x = y.astype(dtype), x.astype(dtype)
    yr, xr = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, rows))
    yc, xc = data.draw(st.integers(0, cols - LANES)), data.draw(st.integers(0, cols - LANES))
    v = dtype(rng.standard_normal())
    before = y.copy()
    _axpy(y, yr, yc, v, x, xr, xc)

    changed = np.zeros(y.shape, bool)
    changed[yr, yc : yc + LANES] = True
    np.testing.assert_array_equal(y[~changed], before[~changed])  # no lane outside the row
    for lane in range(LANES):
        exact = (Fraction(float(v)) * Fraction(float(x[xr, xc + lane]))
                 + Fraction(float(before[yr, yc + lane])))
        got = y[yr, yc + lane]
        # Correctly rounded: within half an ulp of the exact value (one rounding, as
        # an FMA; a multiply then an add can be off by up to a whole ulp).
        assert abs(Fraction(float(got)) - exact) <= _half_ulp(got), (lane, got, float(exact))


def test_axpy_row_converts_the_scalar_to_the_rows_type():
    y = np.zeros((1, LANES), np.float32)
    x = np.ones((1, LANES), np.float32)
    _axpy(y, 0, 0, 0.1, x, 0, 0)  # a float64 scalar
    np.testing.assert_array_equal(y, np.float32(0.1))


@njit(cache=False)
def _row_ops(y, a, b, h, s):
    """Row 1 of ``y`` through each elementwise intrinsic in turn, a copy after each."""
    out = np.empty((5, LANES), y.dtype)
    add_rows(y, 1, a, 0, 3, b, 2, 5)
    out[0] = y[1, :LANES]
    copy_row(y, 1, a, 1, 2)
    out[1] = y[1, :LANES]
    divide_row(y, 1, s)
    out[2] = y[1, :LANES]
    relu_row(y, 1)
    out[3] = y[1, :LANES]
    mask_row(y, 1, h, 0)
    out[4] = y[1, :LANES]
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_elementwise_row_intrinsics_round_as_numpy(seed, dtype):
    rng = np.random.default_rng(seed)

    def draw(rows, cols):
        x = rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-3, 4, (rows, cols))
        x = x.astype(dtype)
        x[rng.random(x.shape) < 0.1] = 0.0  # zeros, NaN and negative zero among the lanes
        x[rng.random(x.shape) < 0.05] = np.nan
        x[rng.random(x.shape) < 0.05] = -0.0
        return x

    y, a, b, h = draw(3, LANES + 2), draw(2, LANES + 4), draw(3, LANES + 6), draw(1, LANES)
    s = dtype(rng.standard_normal() * 7)
    before = y.copy()
    got = _row_ops(y, a, b, h, s)

    added = a[0, 3 : 3 + LANES] + b[2, 5 : 5 + LANES]
    copied = a[1, 2 : 2 + LANES]
    divided = copied / s
    relu = np.where(divided <= 0, dtype(0), divided)  # NaN passes
    masked = np.where(h[0] > 0, relu, dtype(0))  # NaN in h gives 0
    for name, g, w in zip(["add", "copy", "divide", "relu", "mask"], got,
                          [added, copied, divided, relu, masked]):
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8), err_msg=name)
    changed = np.zeros(y.shape, bool)
    changed[1, :LANES] = True
    np.testing.assert_array_equal(y[~changed], before[~changed])


@njit(cache=False)
def _softmax(z, zr, n):
    return softmax_row(z, zr, n)


def _exact_exp(logits: np.ndarray) -> np.ndarray:
    """``exp(z - max(z))`` in x87 extended precision (64-bit mantissa), from the
    differences rounded to the logits' dtype, as every implementation (the
    reference's included) first computes them: that rounding, amplified by exp
    for large differences, is not the intrinsic's error."""
    return np.exp((logits - logits.max()).astype(np.longdouble))


def _exact_softmax(logits: np.ndarray) -> np.ndarray:
    e = _exact_exp(logits)
    return e / e.sum()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       n=st.integers(1, LANES), spread=st.sampled_from([0.1, 3.0, 30.0, 300.0]))
def test_softmax_row_is_within_a_few_ulp(seed, dtype, n, spread):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((3, LANES + 3)) * spread).astype(dtype)
    before = z.copy()
    m, s, best = _softmax(z, 1, n)

    logits = before[1, :n]
    want = _exact_softmax(logits)
    eps = np.finfo(dtype).eps
    # exp within ~2 ulp, the sum and one division add a few more; the smallest
    # normal covers lanes whose exp falls below the normal range (flushed to 0).
    err = np.abs(z[1, :n].astype(np.longdouble) - want)
    assert (err <= 8 * eps * want + np.finfo(dtype).tiny).all(), (err / want).max() / eps
    assert m == logits.max()
    exact_s = _exact_exp(logits).sum()
    assert abs(s - exact_s) <= 8 * eps * exact_s
    assert best == int(np.argmax(z[1, :n]))  # the first largest, as np.argmax
    np.testing.assert_array_equal(z[1, n:LANES], 0)  # padding lanes zeroed
    np.testing.assert_array_equal(z[1, LANES:], before[1, LANES:])  # nothing past the row
    np.testing.assert_array_equal(z[[0, 2]], before[[0, 2]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_row_edge_cases(dtype):
    z = np.zeros((4, LANES), dtype)
    z[0, :10] = 1.5  # ties: every probability 1/10, the first index wins
    z[1, :10] = [-2000, 0, -1, -1000, -90, -80, -700, -720, 3, 3]
    z[2, :10] = np.nan
    z[3, :10] = np.arange(10)
    z[3, 4] = np.inf
    results = [_softmax(z, r, 10) for r in range(4)]

    np.testing.assert_allclose(z[0, :10], 0.1, rtol=2 * np.finfo(dtype).eps)
    assert results[0][2] == 0
    want = _exact_softmax(np.array([-2000, 0, -1, -1000, -90, -80, -700, -720, 3, 3], dtype))
    normal = want >= np.finfo(dtype).tiny  # far below the normal range: exactly zero
    np.testing.assert_allclose(z[1, :10][normal], want[normal].astype(dtype),
                               rtol=8 * np.finfo(dtype).eps)
    assert (z[1, :10][~normal] == 0).all() and results[1][2] == 8
    assert np.isnan(z[2, :10]).all() and results[2][2] == 0  # NaN logits: NaN probabilities
    assert np.isnan(z[3, :10]).all()  # inf - inf, as the reference gets
