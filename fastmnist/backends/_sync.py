"""Hand-over between the threads of one parallel region: three Numba intrinsics.

The narrow kernels run a whole epoch in one parallel region instead of two
regions per step: starting and joining a region cost 2.5-3 µs here (20,000 in
a row, OpenMP layer, 2 threads), against a step of 50-70 µs at 784-10-10 b128.
Inside the region the work is a sequence of tasks; a thread claims a task with
:func:`claim` (an atomic exchange, so each task runs once), reports progress
or completion with :func:`arrive` and waits for the tasks whose results it
reads with :func:`wait_until`. A task that a thread needs and finds still
unclaimed it runs itself, so a region that gets only one thread (or whose
second thread starts late) still finishes (see ``_numba_narrow._epoch``).

The atomic operations are sequentially consistent, and LLVM treats them as
touching all memory, so no load or store of the kernels' arrays moves across
them: what one thread wrote in a task is visible to the other after its
:func:`wait_until`.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._compress import _pointer
from ._fpenv import _X86


def _counter_ok(arr, index) -> bool:
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int64
            and isinstance(index, types.Integer))


@intrinsic
def claim(typingctx, flags, index):
    """Set ``flags[index]`` to 1 atomically; True if this call changed it from 0.

    ``flags`` is a 1-D int64 array. No bounds check.
    """
    if not _counter_ok(flags, index):
        return None

    def codegen(context, builder, signature, args):
        aryty, indty = signature.args
        ptr = _pointer(context, builder, aryty, args[0], (args[1],), (indty,))
        old = builder.atomic_rmw("xchg", ptr, ir.Constant(ir.IntType(64), 1), "seq_cst")
        return builder.icmp_signed("==", old, ir.Constant(ir.IntType(64), 0))

    return types.boolean(flags, index), codegen


@intrinsic
def arrive(typingctx, counter, index):
    """Add 1 to ``counter[index]`` atomically (a 1-D int64 array; no bounds check)."""
    if not _counter_ok(counter, index):
        return None

    def codegen(context, builder, signature, args):
        aryty, indty = signature.args
        ptr = _pointer(context, builder, aryty, args[0], (args[1],), (indty,))
        builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "seq_cst")
        return context.get_dummy_value()

    return types.void(counter, index), codegen


@intrinsic
def wait_until(typingctx, counter, index, target):
    """Spin until ``counter[index] >= target`` (a 1-D int64 array; no bounds check).

    Each turn of the spin is an atomic load and, on x86-64, a ``pause``, which
    tells the core (and a hypervisor watching for spinning) that it is waiting.
    """
    if not (_counter_ok(counter, index) and isinstance(target, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty, indty, tty = signature.args
        ptr = _pointer(context, builder, aryty, args[0], (args[1],), (indty,))
        goal = context.cast(builder, args[2], tty, types.int64)
        loop = builder.append_basic_block("wait_until.loop")
        spin = builder.append_basic_block("wait_until.spin")
        done = builder.append_basic_block("wait_until.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        value = builder.load_atomic(ptr, "seq_cst", align=8)
        builder.cbranch(builder.icmp_signed(">=", value, goal), done, spin)
        builder.position_at_end(spin)
        if _X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        builder.branch(loop)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return types.void(counter, index, target), codegen
