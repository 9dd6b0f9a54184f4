"""A software prefetch hint for the Numba kernels: LLVM's ``llvm.prefetch``.

The narrow kernels copy each step's images from random places in the data
set; asking for an image a few samples before it is copied keeps its cache
lines in flight while earlier ones are converted (784-10-10 b128: 8-16% faster
alone in four side-by-side runs). The lines go to the second-level cache, not
the first. Into L2, 784-10-10 trained 1.03-1.04x faster at b128 (three runs of
alternating epochs) and 1.03-1.04x at b32 (four runs) than with the lines
fetched into L1; L2 for the next batch's images and L1 for those four blocks
ahead was in between. The likely reason (no performance counters here to
confirm it): a hint into L1 holds one of its few line-fill buffers until the
line arrives from L3 or memory (the images are spread over 47 MB), and the
kernels' own loads then wait for a free one.
"""

from __future__ import annotations

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: The overloaded intrinsic's name for opaque pointers, the only kind from LLVM 17
#: on. Older LLVMs name it by the pointee type; there the hint is left out rather
#: than guessed, and the kernels compute the same without it.
_NAME = "llvm.prefetch.p0" if binding.llvm_version_info >= (17,) else None


@intrinsic
def prefetch(typingctx, arr, row, col):
    """Hint that ``arr[row, col]`` (a 2-D C-contiguous array) will be read soon.

    Fetched into the second-level cache and out (locality 2), as data. No bounds check: the
    caller passes an index inside the array. Returns nothing and changes nothing.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"
            and isinstance(row, types.Integer) and isinstance(col, types.Integer)):
        return None
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        if _NAME is not None:
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            index = [context.cast(builder, v, t, types.intp)
                     for v, t in zip(args[1:], signature.args[1:])]
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index)
            byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, _NAME)
            # a read, into L2 and out, of data
            builder.call(fn, [byte_ptr, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
