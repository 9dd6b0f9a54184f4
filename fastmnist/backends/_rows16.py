"""Sixteen-wide row updates for the narrow kernels, as one vector operation each.

The narrow kernels keep every row of the first layer (and of its gradient and
the hidden layer) :data:`LANES` wide. A loop of that fixed length over a row is
what LLVM should turn into one AVX-512 operation, but it unrolls the loop
first and then leaves the sixteen multiply-adds scalar (seen in the assembly
of ``y[u] += v * x[u]``, u < 16). :func:`axpy_row` emits the vector operation
directly: one load of each row, one ``llvm.fma`` on ``<16 x float>`` (two zmm
for float64), one store. Each lane is rounded as the scalar ``fma`` rounds it.
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
