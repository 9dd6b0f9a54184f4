"""Sixteen-wide row updates for the narrow kernels, as one vector operation each.

The narrow kernels keep every row of the first layer (and of its gradient and
the hidden layer) :data:`LANES` wide. A loop of that fixed length over a row is
what LLVM should turn into one AVX-512 operation, but it unrolls the loop
first and then leaves the sixteen multiply-adds scalar (seen in the assembly
of ``y[u] += v * x[u]``, u < 16). :func:`axpy_row` emits the vector operation
directly: one load of each row, one ``llvm.fma`` on ``<16 x float>`` (two zmm
for float64), one store. Each lane is rounded as the scalar ``fma`` rounds it.
The elementwise row operations below (add, copy, divide, ReLU, a ReLU mask)
replace the output phase's other 16-long loops the same way, each lane rounded
as the scalar operation rounds it.
"""

from __future__ import annotations

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

    Several running sums kept in one row of ``y`` at constant ``yc`` can stay
    in registers across a loop: LLVM sees that they do not overlap, which it
    cannot prove for different rows (the row stride is a run-time value).
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
        fnty = ir.FunctionType(vector_type, [vector_type] * 3)
        fma = cgutils.get_or_insert_function(
            builder.module, fnty, f"llvm.fma.v{LANES}{_type_suffix(elem)}")
        builder.store(builder.call(fma, [scale, row, acc]), py, align=align)
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
