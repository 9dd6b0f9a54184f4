"""Sixteen-wide row updates for the narrow kernels, as one vector operation each.

The narrow kernels keep every row of the first layer (and of its gradient and
the hidden layer) :data:`LANES` wide. A loop of that fixed length over a row is
what LLVM should turn into one AVX-512 operation, but it unrolls the loop
first and then leaves the sixteen multiply-adds scalar (seen in the assembly
of ``y[u] += v * x[u]``, u < 16). :func:`axpy_row` emits the vector operation
directly: one load of each row, one ``llvm.fma`` on ``<16 x float>`` (two zmm
for float64), one store. Each lane is rounded as the scalar ``fma`` rounds it.
The elementwise row operations below (add, copy, fill, divide, ReLU, a ReLU
mask) replace the output phase's other 16-long loops the same way, each lane
rounded as the scalar operation rounds it.

The first layer's two loops over a block's union list, its sums
(:func:`gather_block`) and its weight gradient (:func:`scatter_block`), are
emitted whole, so that what must stay in registers does.

The output phase works on sixteen samples at once, one per lane:
:func:`transpose16` turns a block of sixteen rows (a row per sample) into a
row per unit or class and back, and :func:`softmax_cols` takes the softmax
and log-sum-exp down the columns of such a block, within a few ulp of the
exact ones (not rounded as a scalar loop rounds them).
"""

from __future__ import annotations

import decimal
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._compress import _is_matrix, _pointer, _splat, _type_suffix

#: Elements per row.
LANES = 16


def _row_pointer(context, builder, aryty, ary, row, row_type, col, col_type):
    """``&ary[row, col]`` as a pointer to a vector of ``LANES`` elements."""
    ptr = _pointer(context, builder, aryty, ary, (row, col), (row_type, col_type))
    vector_type = ir.VectorType(context.get_value_type(aryty.dtype), LANES)
    return builder.bitcast(ptr, vector_type.as_pointer())


@intrinsic
def axpy_row(typingctx, y, yr, yc, v, x, xr, xc):
    """``y[yr, yc:yc + 16] = fma(v, x[xr, xc:xc + 16], y[yr, yc:yc + 16])``, lane by lane.

    ``y`` and ``x`` are C-contiguous matrices of the same float dtype; ``v``
    is a scalar of any float type (cast to theirs). No bounds check.

    Running sums kept in a row of ``y`` stay in registers across a loop only
    while LLVM can see that nothing else in the loop writes there; that proved
    fragile (see :func:`gather_block`), so loops that depend on it are emitted
    whole instead.
    """
    if not (_is_matrix(y) and _is_matrix(x) and isinstance(y.dtype, types.Float)
            and x.dtype == y.dtype and isinstance(v, types.Float)
            and all(isinstance(i, types.Integer) for i in (yr, yc, xr, xc))):
        return None
    sig = types.void(y, yr, yc, v, x, xr, xc)

    def codegen(context, builder, signature, args):
        yty, yrty, ycty, vty, xty, xrty, xcty = signature.args
        a_y, a_yr, a_yc, a_v, a_x, a_xr, a_xc = args
        elem = context.get_value_type(yty.dtype)
        vector_type = ir.VectorType(elem, LANES)
        align = yty.dtype.bitwidth // 8
        py = _row_pointer(context, builder, yty, a_y, a_yr, yrty, a_yc, ycty)
        px = _row_pointer(context, builder, xty, a_x, a_xr, xrty, a_xc, xcty)
        acc = builder.load(py, align=align)
        row = builder.load(px, align=align)
        scale = _splat(builder, context.cast(builder, a_v, vty, yty.dtype), vector_type)
        builder.store(_fma(builder, scale, row, acc), py, align=align)
        return context.get_dummy_value()

    return sig, codegen


def _block_ok(a, ar, w, wc, ulist, xv, r, n) -> bool:
    """The argument types :func:`gather_block` and :func:`scatter_block` take."""
    return (_is_matrix(a) and _is_matrix(w) and _is_matrix(ulist) and _is_matrix(xv, 3)
            and isinstance(a.dtype, types.Float) and w.dtype == a.dtype and xv.dtype == a.dtype
            and isinstance(ulist.dtype, types.Integer)
            and all(isinstance(i, types.Integer) for i in (ar, wc, r, n)))


class _UnionList:
    """Reads list row ``r`` of ``ulist, xv`` (see ``gather_union16``): pixel ``k``
    and sample ``s``'s value of it."""

    def __init__(self, context, builder, ulty, a_ul, xvty, a_xv, rty, a_r):
        intp = context.get_value_type(types.intp)
        zero = ir.Constant(intp, 0)
        self.context, self.builder, self.ulty = context, builder, ulty
        self.pixels = _pointer(context, builder, ulty, a_ul, (a_r, zero), (rty, types.intp))
        self.values = [_pointer(context, builder, xvty, a_xv, (a_r, ir.Constant(intp, s), zero),
                                (rty, types.intp, types.intp)) for s in range(4)]

    def row_offset(self, k):
        """Where pixel ``k``'s row of ``LANES`` starts, in elements."""
        builder = self.builder
        pixel = self.context.cast(builder, builder.load(builder.gep(self.pixels, [k])),
                                  self.ulty.dtype, types.intp)
        return builder.mul(pixel, ir.Constant(pixel.type, LANES))

    def value(self, s, k, vector_type):
        """Sample ``s``'s value of pixel ``k``, in every lane."""
        builder = self.builder
        return _splat(builder, builder.load(builder.gep(self.values[s], [k])), vector_type)


@intrinsic
def gather_block(typingctx, h, hr, w, wc, ulist, xv, r, n):
    """``h[hr + s] = sum_k xv[r, s, k] w[0, wc + 16 ulist[r, k]:...+16]``, ``k < n``, for
    the four samples ``s`` of a block: the first layer's sums over a union list.

    Each listed weight row is loaded once for the four samples. Two running
    sums per sample take alternate pixels (eight multiply-add chains at once)
    and are added at the end, each multiply-add rounded as ``axpy_row``
    rounds it. The sums are stack variables, which LLVM turns into registers
    without having to prove anything about the arrays (with too few vector
    registers, as without AVX-512, they can still spill). Kept as array
    elements, they stayed in registers only while LLVM could see that nothing
    else in the loop wrote there, and a change to another part of the same
    phase made it store them at every step (784-10-10 b128 about 2x slower;
    README, session 15). No bounds check.
    """
    if not _block_ok(h, hr, w, wc, ulist, xv, r, n):
        return None
    sig = types.void(h, hr, w, wc, ulist, xv, r, n)

    def codegen(context, builder, signature, args):
        hty, hrty, wty, wcty, ulty, xvty, rty, nty = signature.args
        a_h, a_hr, a_w, a_wc, a_ul, a_xv, a_r, a_n = args
        vector_type = ir.VectorType(context.get_value_type(hty.dtype), LANES)
        align = hty.dtype.bitwidth // 8
        intp = context.get_value_type(types.intp)
        zero, one = ir.Constant(intp, 0), ir.Constant(intp, 1)
        block = _UnionList(context, builder, ulty, a_ul, xvty, a_xv, rty, a_r)
        start = _pointer(context, builder, wty, a_w, (zero, a_wc), (types.intp, wcty))
        sums = [cgutils.alloca_once_value(builder, ir.Constant(vector_type, None))
                for _ in range(8)]

        def add_pixel(k, which):
            ptr = builder.gep(start, [block.row_offset(k)])
            row = builder.load(builder.bitcast(ptr, vector_type.as_pointer()), align=align)
            for s in range(4):
                acc = sums[2 * s + which]
                builder.store(_fma(builder, block.value(s, k, vector_type), row,
                                   builder.load(acc)), acc)

        count = context.cast(builder, a_n, nty, types.intp)
        with cgutils.for_range(builder, builder.lshr(count, one)) as loop:
            k = builder.shl(loop.index, one)
            add_pixel(k, 0)
            add_pixel(builder.add(k, one), 1)
        with builder.if_then(builder.trunc(count, ir.IntType(1))):  # an odd count's last
            add_pixel(builder.sub(count, one), 0)
        hr = context.cast(builder, a_hr, hrty, types.intp)
        for s in range(4):
            ptr = _row_pointer(context, builder, hty, a_h, builder.add(hr, ir.Constant(intp, s)),
                               types.intp, zero, types.intp)
            total = builder.fadd(builder.load(sums[2 * s]), builder.load(sums[2 * s + 1]))
            builder.store(total, ptr, align=align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def scatter_block(typingctx, g, gr, gc, d, dr, ulist, xv, r, n):
    """``g[gr, gc + 16 ulist[r, k]:...+16] += sum_s xv[r, s, k] d[dr + s]``, ``k < n``:
    a block of four samples' share of the first layer's weight gradient.

    The four rows ``d[dr:dr + 4]`` are loaded once, before the loop; each
    listed gradient row is loaded once, takes the four multiply-adds (samples
    in order, each rounded as ``axpy_row`` rounds it) and is stored once, so
    ``g`` must not overlap those four rows. As array code, the ``d`` rows
    stayed in registers only while LLVM happened to separate them from ``g``;
    here nothing depends on that. No bounds check.
    """
    if not (_block_ok(g, gr, d, dr, ulist, xv, r, n) and isinstance(gc, types.Integer)):
        return None
    sig = types.void(g, gr, gc, d, dr, ulist, xv, r, n)

    def codegen(context, builder, signature, args):
        gty, grty, gcty, dty, drty, ulty, xvty, rty, nty = signature.args
        a_g, a_gr, a_gc, a_d, a_dr, a_ul, a_xv, a_r, a_n = args
        vector_type = ir.VectorType(context.get_value_type(gty.dtype), LANES)
        align = gty.dtype.bitwidth // 8
        intp = context.get_value_type(types.intp)
        zero = ir.Constant(intp, 0)
        block = _UnionList(context, builder, ulty, a_ul, xvty, a_xv, rty, a_r)
        dr = context.cast(builder, a_dr, drty, types.intp)
        rows = [builder.load(_row_pointer(context, builder, dty, a_d,
                                          builder.add(dr, ir.Constant(intp, s)), types.intp,
                                          zero, types.intp), align=align)
                for s in range(4)]
        start = _pointer(context, builder, gty, a_g, (a_gr, a_gc), (grty, gcty))
        with cgutils.for_range(builder, context.cast(builder, a_n, nty, types.intp)) as loop:
            k = loop.index
            ptr = builder.bitcast(builder.gep(start, [block.row_offset(k)]),
                                  vector_type.as_pointer())
            acc = builder.load(ptr, align=align)
            for s in range(4):
                acc = _fma(builder, block.value(s, k, vector_type), rows[s], acc)
            builder.store(acc, ptr, align=align)
        return context.get_dummy_value()

    return sig, codegen


def _elementwise(context, builder, signature, args, operation):
    """Emit ``y[yr, :16] = operation(builder, operands...)`` for the row operations below.

    ``args`` are ``y, yr`` followed by (array, row, column) triples and scalars,
    as ``signature`` says; each triple is loaded as a row, each scalar splatted.
    """
    yty, yrty = signature.args[:2]
    elem = context.get_value_type(yty.dtype)
    vector_type = ir.VectorType(elem, LANES)
    align = yty.dtype.bitwidth // 8
    zero = ir.Constant(ir.IntType(64), 0)
    py = _row_pointer(context, builder, yty, args[0], args[1], yrty, zero, types.int64)
    operands, i = [], 2
    while i < len(args):
        aty = signature.args[i]
        if isinstance(aty, types.Array):
            p = _row_pointer(context, builder, aty, args[i], args[i + 1], signature.args[i + 1],
                             args[i + 2], signature.args[i + 2])
            operands.append(builder.load(p, align=align))
            i += 3
        else:
            value = context.cast(builder, args[i], aty, yty.dtype)
            operands.append(_splat(builder, value, vector_type))
            i += 1
    builder.store(operation(builder, vector_type, *operands), py, align=align)
    return context.get_dummy_value()


def _rows_ok(y, *arrays) -> bool:
    return (_is_matrix(y) and isinstance(y.dtype, types.Float)
            and all(_is_matrix(a) and a.dtype == y.dtype for a in arrays))


@intrinsic
def add_rows(typingctx, y, yr, a, ar, ac, b, br, bc):
    """``y[yr, :16] = a[ar, ac:ac + 16] + b[br, bc:bc + 16]``, lane by lane (no bounds check)."""
    if not _rows_ok(y, a, b):
        return None

    def codegen(context, builder, signature, args):
        return _elementwise(context, builder, signature, args,
                            lambda bld, vt, u, v: bld.fadd(u, v))

    return types.void(y, yr, a, ar, ac, b, br, bc), codegen


@intrinsic
def copy_row(typingctx, y, yr, x, xr, xc):
    """``y[yr, :16] = x[xr, xc:xc + 16]`` (no bounds check)."""
    if not _rows_ok(y, x):
        return None

    def codegen(context, builder, signature, args):
        return _elementwise(context, builder, signature, args, lambda bld, vt, u: u)

    return types.void(y, yr, x, xr, xc), codegen


@intrinsic
def fill_row(typingctx, y, yr, v):
    """``y[yr, :16] = v`` (``v`` a scalar of any float type, cast to ``y``'s; no bounds check)."""
    if not (_rows_ok(y) and isinstance(v, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return _elementwise(context, builder, signature, args, lambda bld, vt, u: u)

    return types.void(y, yr, v), codegen


@intrinsic
def divide_row(typingctx, y, yr, s):
    """``y[yr, :16] = y[yr, :16] / s``, lane by lane, as scalar division rounds it."""
    if not (_rows_ok(y) and isinstance(s, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        yty, yrty, sty = signature.args
        zero = context.get_constant(types.int64, 0)
        full = (args[0], args[1], args[0], args[1], zero, args[2])
        sig = types.void(yty, yrty, yty, yrty, types.int64, sty)
        return _elementwise(context, builder, sig, full, lambda bld, vt, u, v: bld.fdiv(u, v))

    return types.void(y, yr, s), codegen


@intrinsic
def relu_row(typingctx, y, yr):
    """``y[yr, :16] = 0 where y <= 0``, lane by lane; NaN passes (as ``np.maximum``)."""
    if not _rows_ok(y):
        return None

    def codegen(context, builder, signature, args):
        yty, yrty = signature.args
        zero = context.get_constant(types.int64, 0)
        sig = types.void(yty, yrty, yty, yrty, types.int64)

        def relu(bld, vt, u):
            off = bld.fcmp_ordered("<=", u, ir.Constant(vt, None))  # false for NaN
            return bld.select(off, ir.Constant(vt, None), u)

        return _elementwise(context, builder, sig, (*args, *args, zero), relu)

    return types.void(y, yr), codegen


@intrinsic
def mask_row(typingctx, y, yr, h, hr):
    """``y[yr, :16] = y where h[hr, :16] > 0, else 0``, lane by lane (0 where ``h`` is NaN)."""
    if not _rows_ok(y, h):
        return None

    def codegen(context, builder, signature, args):
        yty, yrty, hty, hrty = signature.args
        zero = context.get_constant(types.int64, 0)
        sig = types.void(yty, yrty, yty, yrty, types.int64, hty, hrty, types.int64)

        def mask(bld, vt, u, gate):
            on = bld.fcmp_ordered(">", gate, ir.Constant(vt, None))
            return bld.select(on, u, ir.Constant(vt, None))

        full = (args[0], args[1], args[0], args[1], zero, args[2], args[3], zero)
        return _elementwise(context, builder, sig, full, mask)

    return types.void(y, yr, h, hr), codegen


def _exp_constants(dtype: types.Float) -> tuple[float, float, float, int, float]:
    """``(log2(e), ln2_hi, ln2_lo, degree, lowest)`` for :func:`_exp_nonpositive` in ``dtype``.

    ``ln2_hi + ln2_lo`` is ln 2 to twice the dtype's precision (from 40 decimal
    digits), so ``x - n ln 2`` loses nothing. The Taylor degree keeps the
    truncation error, at most ``|r|^(d+1) / (d+1)!`` for ``|r| <= ln2 / 2``,
    below a tenth of an ulp: 7 for float32 (5e-9), 13 for float64 (4e-18).
    Below ``lowest`` the result would not be a normal number: it is 0 (as the
    kernels' flush-to-zero mode makes of subnormal results anyway).
    """
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        ln2 = decimal.Decimal(2).ln()
    kind = np.float32 if dtype.bitwidth == 32 else np.float64
    hi = kind(float(ln2))
    lo = kind(float(ln2 - decimal.Decimal(float(hi))))
    lowest = math.log(np.finfo(kind).tiny)  # exp(lowest) is the smallest normal number
    degree = 7 if dtype.bitwidth == 32 else 13
    return float(kind(1 / math.log(2))), float(hi), float(lo), degree, lowest


def _call(builder, name, result_type, args):
    fnty = ir.FunctionType(result_type, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def _fma(builder, a, b, c):
    """``a * b + c`` lane by lane, rounded once (``llvm.fma``)."""
    return _call(builder, f"llvm.fma.{_vector_suffix(a)}", a.type, [a, b, c])


def _exp_nonpositive(builder, x, dtype):
    """``exp(x)`` lane by lane for ``x <= 0``, within two ulp or so (see the tests);
    0 below ``lowest`` (see :func:`_exp_constants`), NaN for NaN.

    ``x = n ln2 + r`` with integer ``n`` and ``|r| <= ln2 / 2``, then
    ``exp(x) = 2^n exp(r)``: ``exp(r)`` by its Taylor polynomial (Horner, in
    FMAs), ``2^n`` built in the exponent bits.
    """
    vector_type = x.type
    suffix = _type_suffix(vector_type.element)
    log2e, ln2_hi, ln2_lo, degree, lowest = _exp_constants(dtype)
    bits = dtype.bitwidth
    int_type = ir.VectorType(ir.IntType(bits), LANES)

    def const(value):
        return ir.Constant(vector_type, [ir.Constant(vector_type.element, value)] * LANES)

    tiny = builder.fcmp_ordered("<", x, const(lowest))
    x = builder.select(tiny, const(lowest), x)  # keeps 2^n normal; the lane is zeroed below
    n = _call(builder, f"llvm.rint.v{LANES}{suffix}", vector_type,
              [builder.fmul(x, const(log2e))])
    r = _fma(builder, n, const(-ln2_hi), x)
    r = _fma(builder, n, const(-ln2_lo), r)
    poly = const(1 / math.factorial(degree))
    for k in range(degree - 1, -1, -1):
        poly = _fma(builder, poly, r, const(1 / math.factorial(k)))
    # A NaN lane takes n = 0 here (converting NaN would be poison); it stays NaN
    # through poly. (The saturating conversion, which needs no select, is
    # scalarised by LLVM: sixteen conversions and clamps.)
    n_int = builder.fptosi(builder.select(builder.fcmp_unordered("uno", n, n), const(0.0), n),
                           int_type)
    mantissa = 23 if bits == 32 else 52
    bias = 127 if bits == 32 else 1023
    exponent = builder.shl(builder.add(n_int, ir.Constant(int_type, [bias] * LANES)),
                           ir.Constant(int_type, [mantissa] * LANES))
    value = builder.fmul(poly, builder.bitcast(exponent, vector_type))
    return builder.select(tiny, ir.Constant(vector_type, None), value)


def _log_positive(builder, x, dtype):
    """``log(x)`` lane by lane for positive normal ``x`` (and +inf, NaN), within three
    ulp (see the tests).

    ``x = 2^k f`` with ``f`` in ``[sqrt(1/2), sqrt(2))``, then
    ``log(f) = 2 atanh(t)``, ``t = (f - 1) / (f + 1)``, ``|t| < 0.172``, by its
    odd series (degree 9 for float32, 21 for float64: the truncation stays
    below a tenth of an ulp), and ``k ln 2`` added in two parts, as in
    :func:`_exp_nonpositive`. One vector pass for sixteen lanes, where libm's
    scalar ``logf`` costs a call per lane.
    """
    vector_type = x.type
    bits = dtype.bitwidth
    int_type = ir.VectorType(ir.IntType(bits), LANES)
    mantissa = 23 if bits == 32 else 52
    bias = 127 if bits == 32 else 1023
    _, ln2_hi, ln2_lo, _, _ = _exp_constants(dtype)
    terms = 5 if bits == 32 else 11  # t, t^3/3, ... up to t^(2 terms - 1)

    def const(value):
        return ir.Constant(vector_type, [ir.Constant(vector_type.element, value)] * LANES)

    def iconst(value):
        return ir.Constant(int_type, [value] * LANES)

    raw = builder.bitcast(x, int_type)
    k = builder.sub(builder.lshr(raw, iconst(mantissa)), iconst(bias))
    f = builder.bitcast(builder.or_(builder.and_(raw, iconst((1 << mantissa) - 1)),
                                    iconst(bias << mantissa)), vector_type)  # in [1, 2)
    big = builder.fcmp_ordered(">", f, const(math.sqrt(2.0)))
    f = builder.select(big, builder.fmul(f, const(0.5)), f)  # exact
    k = builder.select(big, builder.add(k, iconst(1)), k)
    t = builder.fdiv(builder.fsub(f, const(1.0)), builder.fadd(f, const(1.0)))
    t2 = builder.fmul(t, t)
    poly = const(1 / (2 * terms - 1))
    for n in range(terms - 2, -1, -1):
        poly = _fma(builder, poly, t2, const(1 / (2 * n + 1)))
    log_f = builder.fmul(builder.fmul(t, const(2.0)), poly)
    kf = builder.sitofp(k, vector_type)
    value = _fma(builder, kf, const(ln2_hi), _fma(builder, kf, const(ln2_lo), log_f))
    special = builder.fcmp_unordered("uno", x, x)
    special = builder.or_(special, builder.fcmp_ordered("==", x, const(math.inf)))
    return builder.select(special, x, value)


def _block_pointers(context, builder, aryty, ary, row, row_type):
    """Pointers to rows ``row`` to ``row + LANES - 1`` of ``ary`` (columns 0 to 15), as vectors."""
    start = context.cast(builder, row, row_type, types.intp)
    zero = ir.Constant(ir.IntType(64), 0)
    rows = [builder.add(start, ir.Constant(start.type, i)) for i in range(LANES)]
    return [_row_pointer(context, builder, aryty, ary, r, types.intp, zero, types.int64)
            for r in rows]


@intrinsic
def transpose16(typingctx, a, r):
    """Transpose the block ``a[r:r + 16, :16]`` in place (no bounds check).

    Four rounds of interleaving rows ``i`` and ``i + 8`` (a perfect shuffle)
    transpose a 16 x 16 block; LLVM emits each interleave as one two-source
    permute (``vpermt2ps``; seen in the assembly, float32), 64 in all, where
    element by element it would be 120 swaps.
    """
    if not (_rows_ok(a) and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aty, rty = signature.args
        align = aty.dtype.bitwidth // 8
        ptrs = _block_pointers(context, builder, aty, args[0], args[1], rty)
        rows = [builder.load(p, align=align) for p in ptrs]
        half = LANES // 2
        mask_type = ir.VectorType(ir.IntType(32), LANES)
        low = ir.Constant(mask_type, [k // 2 + (LANES if k % 2 else 0) for k in range(LANES)])
        high = ir.Constant(mask_type, [half + k // 2 + (LANES if k % 2 else 0)
                                       for k in range(LANES)])
        for _ in range(LANES.bit_length() - 1):
            rows = [v for i in range(half)
                    for v in (builder.shuffle_vector(rows[i], rows[i + half], low),
                              builder.shuffle_vector(rows[i], rows[i + half], high))]
        for p, v in zip(ptrs, rows):
            builder.store(v, p, align=align)
        return context.get_dummy_value()

    return types.void(a, r), codegen


def _vector_suffix(v) -> str:
    return f"v{v.type.count}{_type_suffix(v.type.element)}"


def _tree_rows(builder, vectors, combine):
    """``vectors`` (a power of two of them) combined element by element, pairwise,
    halves first: ``v[i]`` with ``v[i + 8]``, then ``+ 4``, ``+ 2``, ``+ 1``.

    The inputs and each level are fenced (``llvm.arithmetic.fence``): the
    kernels' ``reassoc`` and ``contract`` flags would otherwise let LLVM
    regroup the sums, or fuse them with the multiplications that made their
    inputs, and the order, so the rounding, would depend on what LLVM chose.
    """
    def fence(v):
        return _call(builder, f"llvm.arithmetic.fence.{_vector_suffix(v)}", v.type, [v])

    vectors = [fence(v) for v in vectors]
    while len(vectors) > 1:
        half = len(vectors) // 2
        vectors = [fence(combine(vectors[i], vectors[i + half])) for i in range(half)]
    return vectors[0]


@intrinsic
def softmax_cols(typingctx, z, zr, n, out, outr):
    """Softmax down the columns of ``z[zr:zr + 16, :16]``: row ``zr + j`` holds class
    ``j``'s logits of sixteen samples (one per lane), rows ``n`` and up are ignored.

    In place: the rows of the ``n`` classes become probabilities, the others 0.
    Row ``outr`` of ``out`` gets each sample's log-sum-exp of the logits (the
    largest logit plus the log of ``sum_j exp(z_j - max)``, by
    :func:`_log_positive`), row ``outr + 1`` the first class of largest
    probability (as a float; 0 if the column is NaN). The exponentials are
    :func:`_exp_nonpositive`'s, the maxima and sums :func:`_tree_rows`' (a
    fixed order; a scalar loop adds in another, and the two differ in the last
    bits), each probability ``e / s``. No bounds check; ``n <= 16``.
    """
    if not (_rows_ok(z, out) and isinstance(zr, types.Integer) and isinstance(n, types.Integer)
            and isinstance(outr, types.Integer)):
        return None
    sig = types.void(z, zr, n, out, outr)

    def codegen(context, builder, signature, args):
        zty, zrty, nty, outty, outrty = signature.args
        a_z, a_zr, a_n, a_out, a_outr = args
        elem = context.get_value_type(zty.dtype)
        vector_type = ir.VectorType(elem, LANES)
        align = zty.dtype.bitwidth // 8
        ptrs = _block_pointers(context, builder, zty, a_z, a_zr, zrty)
        logits = [builder.load(p, align=align) for p in ptrs]
        count = context.cast(builder, a_n, nty, types.int64)
        valid = [builder.icmp_signed("<", ir.Constant(ir.IntType(64), j), count)
                 for j in range(LANES)]
        minus_inf = ir.Constant(vector_type, [ir.Constant(elem, -math.inf)] * LANES)
        none = ir.Constant(vector_type, None)

        def larger(a, b):  # b where either is NaN; a NaN logit still makes every p NaN
            return builder.select(builder.fcmp_ordered(">", a, b), a, b)

        m = _tree_rows(builder, [builder.select(v, x, minus_inf) for v, x in zip(valid, logits)],
                       larger)
        e = [builder.select(v, _exp_nonpositive(builder, builder.fsub(x, m), zty.dtype), none)
             for v, x in zip(valid, logits)]
        s = _tree_rows(builder, e, builder.fadd)
        p = [builder.select(v, builder.fdiv(x, s), none) for v, x in zip(valid, e)]
        for ptr, x in zip(ptrs, p):
            builder.store(x, ptr, align=align)
        top = _tree_rows(builder, p, larger)
        lane_type = ir.VectorType(ir.IntType(32), LANES)
        best = ir.Constant(lane_type, None)
        for j in range(LANES - 1, -1, -1):  # the first class wins a tie
            at_top = builder.and_(builder.fcmp_ordered("==", p[j], top),
                                  _splat(builder, valid[j], ir.VectorType(ir.IntType(1), LANES)))
            best = builder.select(at_top, ir.Constant(lane_type, [j] * LANES), best)
        outs = (builder.fadd(m, _log_positive(builder, s, zty.dtype)),
                builder.sitofp(best, vector_type))
        for k, x in enumerate(outs):
            row = builder.add(context.cast(builder, a_outr, outrty, types.intp),
                              ir.Constant(ir.IntType(64), k))
            zero = ir.Constant(ir.IntType(64), 0)
            builder.store(x, _row_pointer(context, builder, outty, a_out, row, types.intp, zero,
                                          types.int64), align=align)
        return context.get_dummy_value()

    return sig, codegen
