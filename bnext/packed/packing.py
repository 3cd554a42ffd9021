"""Binarize and bit-pack float NCHW activations into the packed engine's NHWC words (numba).

Bit ``c % 64`` of word ``c // 64`` is set where ``sign(x + shift) = -1``, i.e. where
``not (x + shift >= 0)`` in float32, exactly as torch computes it; see :mod:`bnext.packed.kernels`
for the layout.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import threads as _threads  # also chooses numba's threading layer before any parallel call


@intrinsic
def abs_bits(typingctx, x):
    """``|x|`` of a float32 as the int32 bit pattern of the result (the sign bit cleared).

    For non-negative floats the integer order is the float order (a NaN sorts above ``+inf``), so a
    running minimum of margins is an *integer* min reduction, which LLVM vectorizes; a float one it
    leaves scalar (numba's ``fastmath`` sets no function-wide no-NaN attribute). Read the minimum back
    through an int32 view of the float32 array (:func:`pack_input_margins`)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        return builder.and_(bits, ir.Constant(ir.IntType(32), 0x7FFFFFFF))

    return types.int32(x), codegen


@njit(cache=True, nogil=True)
def _pack_row(x, shift, use_shift, pad, xp, r, tmp):
    """Pack input row ``r`` (image ``r // H``, row ``r % H``) of ``x`` into ``xp`` (branch-free inner loop)."""
    height = x.shape[2]
    width = x.shape[3]
    channels = x.shape[1]
    n = r // height
    h = r % height
    zero = np.float32(0.0)
    for wd in range(xp.shape[3]):
        for w in range(width):
            tmp[w] = 0
        c0 = wd * 64
        for cc in range(min(64, channels - c0)):
            c = c0 + cc
            bit = np.uint64(cc)
            sh = shift[c] if use_shift else zero  # x + 0.0 >= 0 is x >= 0 for every float, -0.0 and NaN included
            for w in range(width):
                tmp[w] |= np.uint64(not (x[n, c, h, w] + sh >= zero)) << bit
        for w in range(width):
            xp[n, h + pad, w + pad, wd] = tmp[w]


@njit(parallel=True, cache=True, nogil=True)
def _pack_input_parallel(x, shift, use_shift, pad, xp):
    for r in prange(x.shape[0] * x.shape[2]):
        _pack_row(x, shift, use_shift, pad, xp, r, np.empty(x.shape[3], np.uint64))


@njit(cache=True, nogil=True)
def _pack_image(x, shift, use_shift, pad, xp, n, tmp, want_m, margins):  # pragma: no cover - compiled
    """Image ``n``: each 64-channel word is built over a whole plane at once (long vectorized inner loops; by
    rows, a 7x7 or 14x14 input ran 2-5x slower), then copied into the bordered NHWC buffer. With ``want_m``
    also ``margins[n]`` (int32 bits, :func:`abs_bits`) lowered to the smallest ``|x + shift|`` (the float32
    sum the bits are taken of): an integer minimum, so the loop stays vectorized."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    plane = height * width
    zero = np.float32(0.0)
    xf = x[n].reshape(channels * plane)
    m = margins[n] if want_m else np.int32(0)
    for wd in range(xp.shape[3]):
        for q in range(plane):
            tmp[q] = 0
        c0 = wd * 64
        for cc in range(min(64, channels - c0)):
            c = c0 + cc
            bit = np.uint64(cc)
            base = c * plane
            sh = shift[c] if use_shift else zero
            for q in range(plane):
                v = xf[base + q] + sh
                tmp[q] |= np.uint64(not (v >= zero)) << bit
                if want_m:
                    m = min(m, abs_bits(v))
        for h in range(height):
            for w in range(width):
                xp[n, h + pad, w + pad, wd] = tmp[h * width + w]
    if want_m:
        margins[n] = m


@njit(cache=True, nogil=True)
def _pack_images_serial(x, shift, use_shift, pad, xp, want_m, margins):  # pragma: no cover - compiled
    tmp = np.empty(x.shape[2] * x.shape[3], np.uint64)
    for n in range(x.shape[0]):
        _pack_image(x, shift, use_shift, pad, xp, n, tmp, want_m, margins)


@njit(parallel=True, cache=True, nogil=True)
def _pack_images_parallel(x, shift, use_shift, pad, xp, want_m, margins):  # pragma: no cover - compiled
    for n in prange(x.shape[0]):
        _pack_image(x, shift, use_shift, pad, xp, n, np.empty(x.shape[2] * x.shape[3], np.uint64), want_m, margins)


_NO_MARGINS = np.zeros(1, np.int32)


def _pack_input_serial(x: np.ndarray, shift: np.ndarray, use_shift: bool, pad: int, xp: np.ndarray) -> None:
    """:func:`pack_input` on the calling thread, image by image."""
    _pack_images_serial(x, shift, use_shift, pad, xp, False, _NO_MARGINS)


#: inputs with fewer elements are packed on one thread (a parallel launch costs more than it saves)
PARALLEL_PACK_MIN = 1 << 19


def pack_input(x: np.ndarray, shift: np.ndarray, use_shift: bool, pad: int, xp: np.ndarray) -> None:
    """Binarize ``sign(x + shift)`` of NCHW float32 ``x`` into the zero-bordered NHWC words ``xp``.

    ``xp`` must be zero-initialised (its border is never written).  A bit is set where
    ``not (x + shift >= 0)``: ``sign(...) = -1`` exactly as torch computes it (float32 add).
    """
    parallel = x.size >= PARALLEL_PACK_MIN and _threads.numba_get_threads() > 1
    (_pack_input_parallel if parallel else _pack_input_serial)(x, shift, use_shift, pad, xp)


def pack_input_margins(x: np.ndarray, shift: np.ndarray, use_shift: bool, pad: int, xp: np.ndarray,
                       margins: np.ndarray) -> None:
    """:func:`pack_input` (the same bits) and, per image, ``margins[n] = min(margins[n], min |x[n] + shift|)``:
    the binary margin the landscape engine's audit records, from the same pass (parallel over images)."""
    parallel = x.size >= PARALLEL_PACK_MIN and _threads.numba_get_threads() > 1 and x.shape[0] > 1
    bits = margins.view(np.int32)  # the minimum as abs_bits patterns: an integer reduction, vectorized
    (_pack_images_parallel if parallel else _pack_images_serial)(x, shift, use_shift, pad, xp, True, bits)
