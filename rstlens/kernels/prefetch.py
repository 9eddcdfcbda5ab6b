"""`prefetch(arr, index)`: a cache-line load hint for the numba kernels (llvm.prefetch).

Kernels that walk data whose next address is known ahead (the decoder's next records in
libpcap's buffer, the flow core's next hash slots and rows) start those loads early, so
the misses overlap with the work on the current item instead of following it.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, index):  # type: ignore[no-untyped-def]
    """Hint the CPU to load the cache line holding arr[index] (for reading, kept in all
    cache levels).  `index` is a tuple with one integer per dimension; it must be in bounds
    (numba checks nothing here)."""
    sig = types.none(arr, index)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(arr)(context, builder, args[0])
        idx = cgutils.unpack_tuple(builder, args[1], count=len(index))
        ptr = cgutils.get_item_pointer(context, builder, arr, ary, idx, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
