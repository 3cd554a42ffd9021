"""Per-image binary margins in one read-only pass (numba): ``min |x + shift|`` over every element.

The engine's audit (:mod:`landscape.engine.audit`) asks, at every grid point, which images came closest
to a flipped activation in the fast forward. Done with torch ops that costs an add, an abs and a
reduction over every binarized activation (written and read again); this kernel reads each activation
once, vectorized (an integer minimum of the ``|x|`` bit patterns: 2-4x the float loop on AVX2), and adds
in float32 exactly as the binarizing layers do.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..threads import cpu_workers, run_ordered

#: an activation of at least this many bytes is shared out over the workers of :mod:`landscape.threads`
SPLIT_BYTES = 1 << 20


@intrinsic
def _abs_bits(typingctx, x):
    """``|x|`` of a float32 as int32 bits (sign cleared): ordered as the floats are (NaN above ``+inf``), so
    the running minimum is an integer reduction, which LLVM vectorizes (a float one stays scalar)."""
    if x != types.float32:
        return None
    return types.int32(x), lambda ctx, b, sig, args: b.and_(b.bitcast(args[0], ir.IntType(32)),
                                                             ir.Constant(ir.IntType(32), 0x7FFFFFFF))


@njit(cache=True, nogil=True)
def _min_abs_add(x: np.ndarray, s: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[i] = min(out[i], min_t |x[i, t] + s[t]|)`` for a flat ``(N, F)`` ``x``, an ``(F,)`` ``s`` and the
    int32 view ``out`` of float32 margins. Each ``x + s`` is one float32 add, as the binarizing layers do
    it; ``abs`` and ``min`` are exact, so the result does not depend on the order."""
    n, f = x.shape
    for i in range(n):
        m = out[i]
        for t in range(f):
            m = min(m, _abs_bits(x[i, t] + s[t]))
        out[i] = m


def min_abs_shift_(x: np.ndarray, shift: np.ndarray | None, out: np.ndarray) -> None:
    """``out[i] = min(out[i], min |x[i] + shift|)`` for a float32 ``(N, C, ...)`` array (shift per channel) and a
    contiguous float32 ``out`` (updated in place through an int32 view; NaN activations are passed over).

    One vectorized pass, shared out by images over the single-threaded workers of :mod:`landscape.threads`
    for activations of :data:`SPLIT_BYTES` or more (numba's own parallel launch cost more than the read:
    0.2-0.4 ms for 32 images of 64x16x16 on two threads, 0.19 ms serially); on a worker (batches side by
    side) it runs there, serially."""
    n, c = x.shape[0], x.shape[1]
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1)
    k = x2.shape[1] // max(1, c)
    if shift is None:
        s = np.zeros(x2.shape[1], np.float32)
    else:
        s = np.repeat(np.ascontiguousarray(shift, np.float32).reshape(-1), k)  # the shift of every element
    workers = min(cpu_workers(), n) if x2.nbytes >= SPLIT_BYTES else 1
    bits = out.view(np.int32)  # the minimum as _abs_bits patterns
    if workers <= 1:
        _min_abs_add(x2, s, bits)
        return
    # the images in one contiguous share per worker (landscape.threads: a pool dispatch costs ~50 us, a
    # numba parallel launch 0.2-0.4 ms); each image's rows of ``out`` are written by one worker only
    bounds = [n * i // workers for i in range(workers + 1)]
    run_ordered(lambda ab: _min_abs_add(x2[ab[0]:ab[1]], s, bits[ab[0]:ab[1]]), list(zip(bounds[:-1], bounds[1:])),
                workers)
