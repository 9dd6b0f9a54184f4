"""The sixteen-wide row intrinsics: each lane rounded as the scalar operation rounds it (the
softmax, log-sum-exp and logarithm within a few ulp of the exact ones), the transposition
exact, and nothing outside the row or block written."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmnist.backends._rows16 import (  # noqa: E402
    LANES,
    _log_positive,
    _row_pointer,
    add_rows,
    axpy_row,
    copy_row,
    divide_row,
    fill_row,
    gather_block,
    mask_row,
    relu_row,
    scatter_block,
    softmax_cols,
    transpose16,
)
from fastmnist.numerics import FASTMATH  # noqa: E402


@njit(cache=False)
def _axpy(y, yr, yc, v, x, xr, xc):
    axpy_row(y, yr, yc, v, x, xr, xc)


@njit(cache=False)
def _gather(h, hr, w, wc, ulist, xv, r, n):
    gather_block(h, hr, w, wc, ulist, xv, r, n)


@njit(cache=False)
def _scatter(g, gr, gc, d, dr, ulist, xv, r, n):
    scatter_block(g, gr, gc, d, dr, ulist, xv, r, n)


@njit(cache=False)
def _gather_by_rows(h, hr, w, wc, ulist, xv, r, n, sums):
    """What ``gather_block`` computes, as one ``axpy_row`` per sample and pixel:
    two sums per sample (even and odd pixels), added at the end."""
    sums[:] = 0
    for k in range(n):
        for s in range(4):
            axpy_row(sums, 0, (2 * s + k % 2) * LANES, xv[r, s, k], w, 0,
                     wc + ulist[r, k] * LANES)
    for s in range(4):
        add_rows(h, hr + s, sums, 0, 2 * s * LANES, sums, 0, (2 * s + 1) * LANES)


@njit(cache=False)
def _scatter_by_rows(g, gr, gc, d, dr, ulist, xv, r, n):
    for k in range(n):
        for s in range(4):
            axpy_row(g, gr, gc + ulist[r, k] * LANES, xv[r, s, k], d, dr + s, 0)


def _union_lists(rng, dtype, first, n_pixels, counts):
    """Union lists as ``gather_union16`` writes them, of the given lengths: ascending
    distinct pixels from ``first`` on and four samples' values (some zero), with
    garbage past each list's end."""
    width = n_pixels + 3
    ulist = rng.integers(0, 2**31, (len(counts), width)).astype(np.uint32)
    xv = rng.standard_normal((len(counts), 4, width)).astype(dtype)
    for r, n in enumerate(counts):
        ulist[r, :n] = first + np.sort(rng.choice(n_pixels, n, replace=False))
        xv[r, :, :n] *= rng.random((4, n)) < 0.7
    return ulist, xv


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       n_pixels=st.integers(1, 40), first=st.integers(0, 3), lead=st.integers(0, 2))
def test_block_sums_and_gradient_match_row_by_row_multiply_adds(seed, dtype, n_pixels, first,
                                                                lead):
    # Pixels first .. first + n_pixels - 1 have rows lead .. of w and g: with first > lead
    # the column offset is negative, as for the kernels' second part in GP. Counts: an
    # empty list, and both parities (n and n - 1).
    rng = np.random.default_rng(seed)
    counts = [0, n_pixels, n_pixels - 1, int(rng.integers(0, n_pixels + 1))]
    ulist, xv = _union_lists(rng, dtype, first, n_pixels, counts)
    col = (lead - first) * LANES
    w = rng.standard_normal((1, (lead + n_pixels) * LANES + 5)).astype(dtype)
    for r, n in enumerate(counts):
        h = rng.standard_normal((9, LANES)).astype(dtype)
        want = h.copy()
        hr = int(rng.integers(0, 6))
        _gather(h, hr, w, col, ulist, xv, r, n)
        _gather_by_rows(want, hr, w, col, ulist, xv, r, n, np.empty((1, 8 * LANES), dtype))
        np.testing.assert_array_equal(h, want)  # bit for bit, and no other row touched
        if n == 0:
            assert not h[hr : hr + 4].any()

        g = rng.standard_normal((2, (lead + n_pixels) * LANES)).astype(dtype)
        d = rng.standard_normal((7, LANES)).astype(dtype)
        want = g.copy()
        gr, dr = int(rng.integers(0, 2)), int(rng.integers(0, 4))
        _scatter(g, gr, col, d, dr, ulist, xv, r, n)
        _scatter_by_rows(want, gr, col, d, dr, ulist, xv, r, n)
        np.testing.assert_array_equal(g, want)


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
    out = np.empty((6, LANES), y.dtype)
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
    fill_row(y, 1, s * 3.0)  # a float64 scalar, cast to y's type
    out[5] = y[1, :LANES]
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
    filled = np.full(LANES, dtype(np.float64(s) * 3.0))
    for name, g, w in zip(["add", "copy", "divide", "relu", "mask", "fill"], got,
                          [added, copied, divided, relu, masked, filled]):
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8), err_msg=name)
    changed = np.zeros(y.shape, bool)
    changed[1, :LANES] = True
    np.testing.assert_array_equal(y[~changed], before[~changed])


@njit(cache=False)
def _transpose(a, r):
    transpose16(a, r)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       r=st.integers(0, 5), extra=st.integers(0, 7))
def test_transpose16_transposes_the_block_in_place(seed, dtype, r, extra):
    a = np.random.default_rng(seed).standard_normal((LANES + 6, LANES + extra)).astype(dtype)
    before = a.copy()
    _transpose(a, r)
    np.testing.assert_array_equal(a[r : r + LANES, :LANES], before[r : r + LANES, :LANES].T)
    outside = np.ones(a.shape, bool)
    outside[r : r + LANES, :LANES] = False
    np.testing.assert_array_equal(a[outside], before[outside])


@njit(cache=False, fastmath=FASTMATH)  # accurate under the kernels' flags, as they run
def _softmax(z, zr, n, out, outr):
    softmax_cols(z, zr, n, out, outr)


def _exact_exp(logits: np.ndarray) -> np.ndarray:
    """``exp(z - max(z))`` per column, in x87 extended precision (64-bit mantissa),
    from the differences rounded to the logits' dtype, as every implementation
    (the reference's included) first computes them: that rounding, amplified by
    exp for large differences, is not the intrinsic's error."""
    return np.exp((logits - logits.max(axis=0)).astype(np.longdouble))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       n=st.integers(1, LANES), spread=st.sampled_from([0.1, 3.0, 30.0, 300.0]))
def test_softmax_cols_is_within_a_few_ulp(seed, dtype, n, spread):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((LANES + 2, LANES + 3)) * spread).astype(dtype)
    out = rng.standard_normal((4, LANES + 1)).astype(dtype)
    z_before, out_before = z.copy(), out.copy()
    _softmax(z, 1, n, out, 1)

    logits = z_before[1 : 1 + n, :LANES]  # a column per sample
    e = _exact_exp(logits)
    want = e / e.sum(axis=0)
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    # exp within ~2 ulp, the sum and one division add a few more; the smallest
    # normal covers lanes whose exp falls below the normal range (flushed to 0).
    err = np.abs(z[1 : 1 + n, :LANES].astype(np.longdouble) - want)
    assert (err <= 8 * eps * want + tiny).all(), (err / want).max() / eps
    # log-sum-exp: the sum's relative error (as above) becomes an absolute one
    # in its log, the log adds a few ulp, the largest logit one rounding.
    top = logits.max(axis=0).astype(np.longdouble)
    lse = top + np.log(e.sum(axis=0))
    assert (np.abs(out[1, :LANES] - lse) <= 12 * eps * (1 + np.abs(top) + np.log(n))).all()
    np.testing.assert_array_equal(out[2, :LANES], np.argmax(z[1 : 1 + n, :LANES], axis=0))
    np.testing.assert_array_equal(z[1 + n : 1 + LANES, :LANES], 0)  # the other classes
    np.testing.assert_array_equal(z[[0, 1 + LANES]], z_before[[0, 1 + LANES]])  # outside
    np.testing.assert_array_equal(z[:, LANES:], z_before[:, LANES:])
    np.testing.assert_array_equal(out[[0, 3]], out_before[[0, 3]])
    np.testing.assert_array_equal(out[:, LANES:], out_before[:, LANES:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cols_edge_cases(dtype):
    z = np.zeros((LANES, LANES), dtype)  # a column per case, ten classes
    z[:10, 0] = 1.5  # ties: every probability 1/10, the first class wins
    z[:10, 1] = [-2000, 0, -1, -1000, -90, -80, -700, -720, 3, 3]
    z[:10, 2] = np.nan
    z[:10, 3] = np.arange(10)
    z[4, 3] = np.inf
    z[:10, 4] = np.arange(10) * 1e4  # one class takes it all: lse is the largest logit
    out = np.zeros((2, LANES), dtype)
    _softmax(z, 0, 10, out, 0)

    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(z[:10, 0], 0.1, rtol=2 * eps)
    assert out[1, 0] == 0
    np.testing.assert_allclose(out[0, 0], 1.5 + np.log(10), rtol=4 * eps)
    col = np.array([-2000, 0, -1, -1000, -90, -80, -700, -720, 3, 3], dtype)
    e = _exact_exp(col[:, None])[:, 0]
    want = e / e.sum()
    normal = want >= np.finfo(dtype).tiny  # far below the normal range: exactly zero
    np.testing.assert_allclose(z[:10, 1][normal], want[normal].astype(dtype), rtol=8 * eps)
    assert (z[:10, 1][~normal] == 0).all() and out[1, 1] == 8
    assert np.isnan(z[:10, 2]).all() and out[1, 2] == 0 and np.isnan(out[0, 2])
    assert np.isnan(z[:10, 3]).all()  # inf - inf, as the reference gets
    assert z[9, 4] == 1 and out[0, 4] == 9e4 and out[1, 4] == 9


@intrinsic
def _log_rows(typingctx, a):
    """``a[r, :16] = log(a[r, :16])`` for every row, by ``_log_positive``."""
    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        align = aty.dtype.bitwidth // 8
        zero = ir.Constant(ir.IntType(64), 0)
        n_rows = context.make_array(aty)(context, builder, args[0]).shape
        n_rows = builder.extract_value(n_rows, 0)
        with cgutils.for_range(builder, n_rows) as loop:
            ptr = _row_pointer(context, builder, aty, args[0], loop.index, types.intp, zero,
                               types.int64)
            builder.store(_log_positive(builder, builder.load(ptr, align=align), aty.dtype),
                          ptr, align=align)
        return context.get_dummy_value()

    return types.void(a), codegen


@njit(cache=False, fastmath=FASTMATH)
def _log(a):
    _log_rows(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_positive_is_within_a_few_ulp(dtype):
    rng = np.random.default_rng(7)
    tiny, huge = np.finfo(dtype).tiny, np.finfo(dtype).max
    x = np.concatenate([
        rng.uniform(1, 16, 4000),  # where the kernels take it: a softmax's sum
        np.exp(rng.uniform(np.log(tiny), np.log(huge), 4000)),
        [tiny, 1.0, 2.0, np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 2), huge, np.inf, np.nan],
    ]).astype(dtype)
    x = np.concatenate([x, np.ones(-len(x) % LANES, dtype)])
    got = x.copy().reshape(-1, LANES)
    _log(got)
    got = got.ravel()
    finite = np.isfinite(x)
    exact = np.log(x[finite].astype(np.longdouble))
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.longdouble)
    assert (np.abs(got[finite] - exact) <= 3 * ulp).all()
    assert got[x == 1.0].max() == 0 and np.isnan(got[np.isnan(x)]).all()
    assert got[x == np.inf][0] == np.inf
