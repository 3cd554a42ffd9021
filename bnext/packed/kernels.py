"""numba kernels of the packed engine: input binarize+pack, XNOR-popcount convolution.

Layouts
- packed activations: ``(N, H + 2p, W + 2p, words)`` uint64, NHWC, bit ``c % 64`` of
  word ``c // 64`` set where channel ``c`` is ``-1``; the ``p``-wide border is all zero
  bits (value ``+1``), channel tails are zero.
- packed weights (kernel form): 1-D uint64, tiles ``[O_pad / OT][L][OT]`` with
  ``L = k * k * words`` (tap-major, then word) and ``OT`` output channels per tile
  (zero-filled beyond ``O``).

Convolution: for output pixel ``p`` and channel ``o``, ``P = sum_l popcount(x_l XOR w_l)``
over the receptive field, ``y = k*k*C - 2 P`` is the convolution with ``+1`` padding;
the true zero-padded output subtracts, for each tap that falls on the border, the sum
of that tap's weight signs (``tapsum``, precomputed at pack time):
``y = K - 2 P - sum_{padded taps} tapsum[tap, o]``.  Everything is integer and exact.

The popcount inner loop is a hand-built LLVM micro-kernel (``@intrinsic``): ``PB``
output pixels times ``OT`` output channels held in ``<8 x i64>`` registers across the
whole receptive field, ``llvm.ctpop`` on vectors (``vpopcntq`` with AVX-512 VPOPCNTDQ,
a ``vpshufb`` sequence on AVX2; scalar ``popcnt`` below that).  No compiler is needed at
install time: numba compiles it on first use and caches it (``cache=True``).

No ``fastmath``: the only float operations are ``x + shift`` before the sign test and the
alpha multiply, which must round exactly like torch's.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# numba's OpenMP pool spin-waits after every parallel region; next to torch's own OpenMP pool on
# a small machine the two steal each other's cores (measured on 2 cores: the float model ran 3-6x
# slower beside an omp-layer numba pool).  The workqueue layer sleeps when idle.  An explicit
# NUMBA_THREADING_LAYER wins; nothing changes once numba has launched its threads.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

#: output pixels per micro-tile
PB = 4
#: <8 x i64> vectors per micro-tile; OT = 8 * NV output channels per tile
NV = 2
OT = 8 * NV

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


@intrinsic
def popcount64(typingctx, x):
    """Population count of an integer through ``llvm.ctpop.i64`` (compiles to POPCNT)."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.uint64(x)

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[0], signature.args[0], types.uint64)
        return builder.ctpop(v)

    return sig, codegen


@intrinsic
def _tile(typingctx, a, a_off, a_stride, b, b_off, length, k_total, out, o_off, o_stride):
    """Micro-kernel: ``out[o_off + j*o_stride + c] = K - 2 * sum_l popcount(a_j[l] ^ b[b_off + l*OT + c])``.

    with ``a_j[l] = a[a_off + j*a_stride + l]``, for ``j < PB`` pixels and ``c < OT`` channels;
    the ``PB * NV`` accumulators stay in vector registers for the whole loop over
    ``l < length``; results are stored as float32.
    """
    sig = types.void(a, a_off, a_stride, b, b_off, length, k_total, out, o_off, o_stride)

    def codegen(context, builder, signature, args):
        a_, a_off_, a_st_, b_, b_off_, len_, k_, out_, o_off_, o_st_ = args
        aptr = builder.gep(context.make_array(signature.args[0])(context, builder, a_).data, [a_off_])
        bptr = builder.gep(context.make_array(signature.args[3])(context, builder, b_).data, [b_off_])
        optr = builder.gep(context.make_array(signature.args[7])(context, builder, out_).data, [o_off_])
        vty = ir.VectorType(_I64, 8)
        fty = ir.VectorType(ir.FloatType(), 8)
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), "llvm.ctpop.v8i64")
        zero = ir.Constant(vty, None)
        undef = ir.Constant(vty, ir.Undefined)
        splat0 = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)

        pre = builder.basic_block
        loop = builder.append_basic_block("tile.loop")
        after = builder.append_basic_block("tile.after")
        builder.cbranch(builder.icmp_signed(">", len_, ir.Constant(_I64, 0)), loop, after)

        builder.position_at_end(loop)
        l_ = builder.phi(_I64)
        l_.add_incoming(ir.Constant(_I64, 0), pre)
        accs = []
        for _ in range(PB * NV):
            p = builder.phi(vty)
            p.add_incoming(zero, pre)
            accs.append(p)
        lb = builder.mul(l_, ir.Constant(_I64, OT))
        bvecs = []
        for v in range(NV):
            p = builder.gep(bptr, [builder.add(lb, ir.Constant(_I64, 8 * v))])
            bvecs.append(builder.load(builder.bitcast(p, vty.as_pointer()), align=8))
        new = []
        for j in range(PB):
            p = builder.gep(aptr, [builder.add(builder.mul(a_st_, ir.Constant(_I64, j)), l_)])
            word = builder.load(p, align=8)
            av = builder.shuffle_vector(builder.insert_element(undef, word, ir.Constant(_I32, 0)), undef, splat0)
            for v in range(NV):
                new.append(builder.add(accs[j * NV + v], builder.call(ctpop, [builder.xor(av, bvecs[v])])))
        l_next = builder.add(l_, ir.Constant(_I64, 1))
        end = builder.basic_block
        l_.add_incoming(l_next, end)
        for p, n in zip(accs, new):
            p.add_incoming(n, end)
        builder.cbranch(builder.icmp_signed("<", l_next, len_), loop, after)

        builder.position_at_end(after)
        results = []
        for i in range(PB * NV):
            r = builder.phi(vty)
            r.add_incoming(zero, pre)
            r.add_incoming(new[i], end)
            results.append(r)
        kvec = builder.shuffle_vector(builder.insert_element(undef, k_, ir.Constant(_I32, 0)), undef, splat0)
        for j in range(PB):
            for v in range(NV):
                y = builder.sub(kvec, builder.shl(results[j * NV + v], ir.Constant(vty, [1] * 8)))
                yf = builder.sitofp(y, fty)
                off = builder.add(builder.mul(o_st_, ir.Constant(_I64, j)), ir.Constant(_I64, 8 * v))
                builder.store(yf, builder.bitcast(builder.gep(optr, [off]), fty.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, cache=True)
def pack_input(x, shift, use_shift, pad, xp):  # pragma: no cover - compiled
    """Binarize ``sign(x + shift)`` of NCHW float32 ``x`` into the zero-bordered NHWC words ``xp``.

    ``xp`` must be zero-initialised (its border is never written).  A bit is set where
    ``not (x + shift >= 0)``, which is ``sign(...) = -1`` exactly as torch computes it.
    """
    n_img, channels, height, width = x.shape
    n_words = xp.shape[3]
    zero = np.float32(0.0)
    for r in prange(n_img * height):
        n = r // height
        h = r % height
        tmp = np.empty(width, np.uint64)
        for wd in range(n_words):
            for w in range(width):
                tmp[w] = 0
            c0 = wd * 64
            for cc in range(min(64, channels - c0)):
                c = c0 + cc
                bit = np.uint64(1) << np.uint64(cc)
                if use_shift:
                    sh = shift[c]
                    for w in range(width):
                        if not (x[n, c, h, w] + sh >= zero):
                            tmp[w] |= bit
                else:
                    for w in range(width):
                        if not (x[n, c, h, w] >= zero):
                            tmp[w] |= bit
            for w in range(width):
                xp[n, h + pad, w + pad, wd] = tmp[w]


@njit(parallel=True, cache=True)
def binary_conv(xp, wt, tapsum, k, stride, pad, in_h, in_w, k_total, alpha, use_alpha, n_chunks, out):
    """XNOR-popcount convolution of packed ``xp`` with kernel-form weights ``wt`` into NCHW float32 ``out``.

    Args:
        xp: ``(N, in_h + 2 pad, in_w + 2 pad, words)`` uint64 (zero border).
        wt: 1-D uint64 weight tiles ``[O_pad / OT][k*k*words][OT]``.
        tapsum: ``(k*k, O_pad)`` int64, sum of weight signs per tap (border correction).
        k_total: ``k * k * C_in``.
        alpha: ``(O,)`` float32 per-output-channel scale, used if ``use_alpha``.
        n_chunks: split the output channels of every row into this many parallel tasks.
        out: ``(N, O, H_out, W_out)`` float32, fully overwritten.
    """
    n_img = xp.shape[0]
    hp = xp.shape[1]
    wp = xp.shape[2]
    n_words = xp.shape[3]
    n_out = out.shape[1]
    h_out = out.shape[2]
    w_out = out.shape[3]
    length = k * k * n_words
    n_tiles = wt.shape[0] // (length * OT)
    n_blocks = (w_out + PB - 1) // PB
    tiles_per_chunk = (n_tiles + n_chunks - 1) // n_chunks
    xf = xp.reshape(xp.size)
    of = out.reshape(out.size)
    # interior output columns need no border correction
    ow_lo = (pad + stride - 1) // stride
    ow_hi = (in_w - k + pad) // stride
    direct = k == 1 and stride == 1  # 1x1 stride 1: the pixels' words are contiguous, no gather
    for task in prange(n_img * h_out * n_chunks):
        row = task // n_chunks
        chunk = task % n_chunks
        n = row // h_out
        oh = row % h_out
        t0 = chunk * tiles_per_chunk
        t1 = min(n_tiles, t0 + tiles_per_chunk)
        if t0 >= t1:
            continue
        width = (t1 - t0) * OT
        abuf = np.zeros(PB * length, np.uint64)
        rowbuf = np.empty(n_blocks * PB * width, np.float32)  # [ow][o - t0*OT]
        for b in range(n_blocks):
            ow0 = b * PB
            nb = min(PB, w_out - ow0)
            if direct and nb == PB:
                src = ((n * hp + oh + pad) * wp + ow0 + pad) * n_words
                for t in range(t0, t1):
                    _tile(xf, src, n_words, wt, t * length * OT, length, k_total,
                          rowbuf, ow0 * width + (t - t0) * OT, width)
                continue
            for j in range(nb):
                iw0 = (ow0 + j) * stride
                for ki in range(k):
                    for kj in range(k):
                        src = ((n * hp + oh * stride + ki) * wp + iw0 + kj) * n_words
                        dst = j * length + (ki * k + kj) * n_words
                        for wd in range(n_words):
                            abuf[dst + wd] = xf[src + wd]
            for t in range(t0, t1):
                _tile(abuf, 0, length, wt, t * length * OT, length, k_total,
                      rowbuf, ow0 * width + (t - t0) * OT, width)
        # transpose the row into NCHW, correct the zero-padded border exactly, scale
        ih0 = oh * stride - pad
        row_border = ih0 < 0 or ih0 + k > in_h
        for ol in range(width):
            o = t0 * OT + ol
            if o >= n_out:
                break
            base = ((n * n_out + o) * h_out + oh) * w_out
            for ow in range(w_out):
                of[base + ow] = rowbuf[ow * width + ol]
            for ow in range(w_out):
                if row_border or ow < ow_lo or ow > ow_hi:
                    iw0 = ow * stride - pad
                    corr = 0
                    for ki in range(k):
                        ih = ih0 + ki
                        for kj in range(k):
                            iw = iw0 + kj
                            if ih < 0 or ih >= in_h or iw < 0 or iw >= in_w:
                                corr += tapsum[ki * k + kj, o]
                    of[base + ow] -= np.float32(corr)
            if use_alpha:
                a = alpha[o]
                for ow in range(w_out):
                    of[base + ow] *= a


def set_threads(threads: int) -> int:
    """Set numba's thread count for this thread (clamped to ``[1, NUMBA_NUM_THREADS]``); returns it."""
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def numba_get_threads() -> int:
    """numba's current thread count for this thread."""
    return numba.get_num_threads()


def chunks_for(rows: int, n_tiles: int, threads: int) -> int:
    """Output-channel chunks per row so that small images still give every thread work."""
    if rows >= 8 * threads:
        return 1
    return max(1, min(n_tiles, (8 * threads + rows - 1) // rows))
