"""The sixteen-wide row intrinsics: each lane rounded as the scalar operation rounds it, and
no lane outside the row written."""

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
