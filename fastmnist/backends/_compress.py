"""Listing an image's nonzero pixels sixteen at a time: LLVM's ``masked.compressstore``.

The sparse first layer starts from a list of the nonzero pixels of an image
(or of a block of four). Written as a loop, that list costs a load, a compare
and two stores per pixel, about 2.5 cycles each, and LLVM cannot vectorise it
because every store's place depends on the count so far. These intrinsics do
sixteen pixels at once: compare them with zero, and store the positions and
scaled values of the nonzero ones contiguously (AVX-512 ``vpcompressd`` /
``vcompressps``; other CPUs get LLVM's scalar expansion, slower but the same
result). The values are ``pixel * scale`` in the list's dtype, rounded as the
scalar loop rounds them, so the lists are identical.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Pixels per call.
LANES = 16

_I1, _I32, _I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)


def _pointer(context, builder, aryty, ary, indices, index_types):
    """Address of ``ary[indices]`` (no bounds check)."""
    array = context.make_array(aryty)(context, builder, ary)
    index = [context.cast(builder, v, t, types.intp) for v, t in zip(indices, index_types)]
    return cgutils.get_item_pointer(context, builder, aryty, array, index)


def _splat(builder, value, vector_type):
    """A vector with ``value`` in every lane."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, _I32(0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, LANES), None))


def _load_chunk(context, builder, aryty, ary, row, col, row_type, col_type):
    """``ary[row, col:col + LANES]`` as a vector, and its lanes ``!= 0`` as a mask."""
    elem = context.get_value_type(aryty.dtype)
    vector_type = ir.VectorType(elem, LANES)
    ptr = _pointer(context, builder, aryty, ary, (row, col), (row_type, col_type))
    chunk = builder.load(builder.bitcast(ptr, vector_type.as_pointer()), align=1)
    zero = ir.Constant(vector_type, None)
    if isinstance(aryty.dtype, types.Integer):
        nonzero = builder.icmp_unsigned("!=", chunk, zero)
    else:  # unordered: NaN counts as nonzero, as ``x != 0`` does
        nonzero = builder.fcmp_unordered("!=", chunk, zero)
    return chunk, nonzero


def _scaled(context, builder, chunk, in_dtype, scale, out_dtype):
    """``chunk * scale`` in ``out_dtype`` (a float type), lane by lane."""
    elem = context.get_value_type(out_dtype)
    vector_type = ir.VectorType(elem, LANES)
    if isinstance(in_dtype, types.Integer):
        # exact: every uint8 (or other integer pixel) below 2**24 is a float32
        values = builder.uitofp(chunk, vector_type) if not in_dtype.signed else \
            builder.sitofp(chunk, vector_type)
    elif in_dtype.bitwidth < out_dtype.bitwidth:
        values = builder.fpext(chunk, vector_type)
    elif in_dtype.bitwidth > out_dtype.bitwidth:
        values = builder.fptrunc(chunk, vector_type)
    else:
        values = chunk
    return builder.fmul(values, _splat(builder, scale, vector_type))


def _compress_store(builder, values, mask, ptr):
    """Store the lanes of ``values`` where ``mask`` is set, in order, from ``ptr`` on."""
    vector_type = values.type
    fnty = ir.FunctionType(ir.VoidType(), [vector_type, ptr.type, mask.type])
    name = f"llvm.masked.compressstore.v{LANES}{_type_suffix(vector_type.element)}"
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [values, ptr, mask])


def _type_suffix(elem) -> str:
    if isinstance(elem, ir.IntType):
        return f"i{elem.width}"
    return {"float": "f32", "double": "f64"}[str(elem)]


def _positions(builder, col, col_type, context, index_elem):
    """``col, col + 1, ..., col + LANES - 1`` as a vector of the index list's type."""
    vector_type = ir.VectorType(index_elem, LANES)
    start = context.cast(builder, col, col_type, types.intp)
    start = builder.trunc(start, index_elem) if index_elem.width < 64 else start
    iota = ir.Constant(vector_type, list(range(LANES)))
    return builder.add(_splat(builder, start, vector_type), iota)


def _count(builder, mask):
    """How many lanes of ``mask`` are set, as an int64."""
    bits = builder.zext(builder.bitcast(mask, ir.IntType(LANES)), _I64)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64]),
                                        "llvm.ctpop.i64")
    return builder.call(fn, [bits])


def _is_matrix(t, ndim=2) -> bool:
    return isinstance(t, types.Array) and t.ndim == ndim and t.layout == "C"


@intrinsic
def gather_nonzero16(typingctx, images, g, col, scale, idx, val, t, m):
    """List the nonzeros among ``images[g, col:col + 16]`` from ``idx[t, m]``, ``val[t, m]`` on.

    Writes the pixel numbers (``col + lane``) to ``idx[t]`` and ``pixel * scale``
    to ``val[t]``, both in ascending order, and returns how many (uint64). No
    bounds check: the caller keeps ``col + 16 <= images.shape[1]`` and leaves
    room for sixteen entries from ``m``.
    """
    if not (_is_matrix(images) and _is_matrix(idx) and _is_matrix(val)
            and isinstance(idx.dtype, types.Integer) and isinstance(val.dtype, types.Float)
            and all(isinstance(a, types.Integer) for a in (g, col, t, m))
            and isinstance(scale, types.Float)):
        return None
    sig = types.uint64(images, g, col, scale, idx, val, t, m)

    def codegen(context, builder, signature, args):
        imgty, gty, colty, scty, idxty, valty, tty, mty = signature.args
        a_img, a_g, a_col, a_scale, a_idx, a_val, a_t, a_m = args
        chunk, nonzero = _load_chunk(context, builder, imgty, a_img, a_g, a_col, gty, colty)
        scale_v = context.cast(builder, a_scale, scty, valty.dtype)
        values = _scaled(context, builder, chunk, imgty.dtype, scale_v, valty.dtype)
        positions = _positions(builder, a_col, colty, context,
                               context.get_value_type(idxty.dtype))
        _compress_store(builder, positions, nonzero,
                        _pointer(context, builder, idxty, a_idx, (a_t, a_m), (tty, mty)))
        _compress_store(builder, values, nonzero,
                        _pointer(context, builder, valty, a_val, (a_t, a_m), (tty, mty)))
        return _count(builder, nonzero)

    return sig, codegen


@intrinsic
def gather_union16(typingctx, images, g0, g1, g2, g3, col, skip, s0, s1, s2, s3, ulist, xv, row,
                   n):
    """The pixels among ``images[g, col:col + 16]`` nonzero in any of the four images ``g0-g3``,
    from ``ulist[row, n]`` and ``xv[row, :, n]`` on.

    Lanes below ``skip`` are left out (a chunk that overlaps the previous one).
    Writes the pixel numbers to ``ulist[row]`` and image ``s``'s values times
    ``s<s>`` to ``xv[row, s]``, in ascending order, and returns how many
    (uint64). No bounds check, as in :func:`gather_nonzero16`.
    """
    gs = (g0, g1, g2, g3)
    scales = (s0, s1, s2, s3)
    if not (_is_matrix(images) and _is_matrix(ulist) and _is_matrix(xv, 3)
            and isinstance(ulist.dtype, types.Integer) and isinstance(xv.dtype, types.Float)
            and all(isinstance(a, types.Integer) for a in (*gs, col, skip, row, n))
            and all(isinstance(s, types.Float) for s in scales)):
        return None
    sig = types.uint64(images, g0, g1, g2, g3, col, skip, s0, s1, s2, s3, ulist, xv, row, n)

    def codegen(context, builder, signature, args):
        imgty = signature.args[0]
        g_types, g_vals = signature.args[1:5], args[1:5]
        colty, skipty = signature.args[5:7]
        s_types, s_vals = signature.args[7:11], args[7:11]
        ulty, xvty, rowty, nty = signature.args[11:15]
        a_img, a_col, a_skip, a_ul, a_xv, a_row, a_n = (args[0], args[5], args[6], *args[11:15])
        chunks, masks = zip(*(
            _load_chunk(context, builder, imgty, a_img, gv, a_col, gt, colty)
            for gv, gt in zip(g_vals, g_types)
        ))
        union = builder.or_(builder.or_(masks[0], masks[1]), builder.or_(masks[2], masks[3]))
        lane_type = ir.VectorType(_I32, LANES)
        skip32 = builder.trunc(context.cast(builder, a_skip, skipty, types.intp), _I32)
        wanted = builder.icmp_unsigned(">=", ir.Constant(lane_type, list(range(LANES))),
                                       _splat(builder, skip32, lane_type))
        union = builder.and_(union, wanted)
        positions = _positions(builder, a_col, colty, context,
                               context.get_value_type(ulty.dtype))
        _compress_store(builder, positions, union,
                        _pointer(context, builder, ulty, a_ul, (a_row, a_n), (rowty, nty)))
        for s in range(4):
            scale_v = context.cast(builder, s_vals[s], s_types[s], xvty.dtype)
            values = _scaled(context, builder, chunks[s], imgty.dtype, scale_v, xvty.dtype)
            ptr = _pointer(context, builder, xvty, a_xv, (a_row, ir.Constant(_I64, s), a_n),
                           (rowty, types.int64, nty))
            _compress_store(builder, values, union, ptr)
        return _count(builder, union)

    return sig, codegen
