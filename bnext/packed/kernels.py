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
of that tap's weight signs (``tapsum[tap, o]``, precomputed at pack time):
``y = K - 2 P - sum_{padded taps} tapsum[tap, o]``, looked up per pixel in the small
table of :func:`border_correction`.  Everything is integer and exact.

The popcount inner loop is a hand-built LLVM micro-kernel (``@intrinsic``): ``PB``
output pixels times ``OT`` output channels held in ``<8 x i64>`` registers across the
whole receptive field, ``llvm.ctpop`` on vectors (``vpopcntq`` with AVX-512 VPOPCNTDQ,
a ``vpshufb`` sequence on AVX2; scalar ``popcnt`` below that).  Each loaded weight vector
serves ``PB`` pixels, each broadcast input word ``NV`` vectors.  Output pixels go in blocks
of ``PB`` over the flattened ``H_out * W_out`` plane (a 14-wide row wastes nothing); each
pixel's receptive field is read in place, ``k`` segments of ``k * words`` contiguous words
(no im2col copy), and one call runs all full ``OT``-channel tiles of a block.  The epilogue
``(K - 2 P - corr) * alpha`` is float arithmetic on integers below 2**24 (exact), then a
4x8 register transpose to NCHW.  No compiler is needed at install time: numba compiles it
on first use and caches it (``cache=True``).  Measured limits of this form of kernel (the
running clock, ``vpopcntq`` and ``vpxorq + vpopcntq + vpaddq`` throughputs):
:mod:`bnext.packed.roofline`.

No ``fastmath``: the only inexact float operations are ``x + shift`` before the sign test and
the alpha multiply, which must round exactly like torch's.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .packing import PARALLEL_PACK_MIN, _pack_input_parallel, _pack_input_serial, pack_input  # noqa: F401
from .pool import maxpool2d  # noqa: F401
from .threads import ThreadChooser, chunks_for, numba_get_threads, set_threads  # noqa: F401

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


def _emit_popcount_loop(builder, aptr, offptr, n_seg, seg_len, seg_stride, bptr):
    """Emit the register-blocked XNOR-popcount loop; returns the ``PB * NV`` ``<8 x i64>`` sums (pixel-major).

    Pixel ``j`` reads ``n_seg`` segments of ``seg_len`` words, ``a[offs[j] + s * seg_stride + l]`` (the ``k``
    kernel rows of its receptive field, read in place: no im2col copy); the weights are read linearly,
    ``b[(s * seg_len + l) * OT + c]``.
    """
    vty = ir.VectorType(_I64, 8)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), "llvm.ctpop.v8i64")
    zero = ir.Constant(vty, None)
    undef = ir.Constant(vty, ir.Undefined)
    splat0 = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)
    i0, i1 = ir.Constant(_I64, 0), ir.Constant(_I64, 1)
    bases = [builder.gep(aptr, [builder.load(builder.gep(offptr, [ir.Constant(_I64, j)]))]) for j in range(PB)]

    pre = builder.basic_block
    seg_head = builder.append_basic_block("seg.head")
    loop = builder.append_basic_block("tile.loop")
    seg_end = builder.append_basic_block("seg.end")
    after = builder.append_basic_block("tile.after")
    nonempty = builder.and_(builder.icmp_signed(">", n_seg, i0), builder.icmp_signed(">", seg_len, i0))
    builder.cbranch(nonempty, seg_head, after)

    builder.position_at_end(seg_head)
    s_ = builder.phi(_I64)
    s_.add_incoming(i0, pre)
    seg_accs = []
    for _ in range(PB * NV):
        p = builder.phi(vty)
        p.add_incoming(zero, pre)
        seg_accs.append(p)
    rows = [builder.gep(base, [builder.mul(s_, seg_stride)]) for base in bases]
    bseg = builder.gep(bptr, [builder.mul(builder.mul(s_, seg_len), ir.Constant(_I64, OT))])
    builder.branch(loop)

    builder.position_at_end(loop)
    l_ = builder.phi(_I64)
    l_.add_incoming(i0, seg_head)
    accs = []
    for i in range(PB * NV):
        p = builder.phi(vty)
        p.add_incoming(seg_accs[i], seg_head)
        accs.append(p)
    lb = builder.mul(l_, ir.Constant(_I64, OT))
    bvecs = []
    for v in range(NV):
        p = builder.gep(bseg, [builder.add(lb, ir.Constant(_I64, 8 * v))])
        bvecs.append(builder.load(builder.bitcast(p, vty.as_pointer()), align=8))
    new = []
    for j in range(PB):
        word = builder.load(builder.gep(rows[j], [l_]), align=8)
        av = builder.shuffle_vector(builder.insert_element(undef, word, ir.Constant(_I32, 0)), undef, splat0)
        for v in range(NV):
            new.append(builder.add(accs[j * NV + v], builder.call(ctpop, [builder.xor(av, bvecs[v])])))
    l_next = builder.add(l_, i1)
    l_.add_incoming(l_next, loop)
    for p, n in zip(accs, new):
        p.add_incoming(n, loop)
    builder.cbranch(builder.icmp_signed("<", l_next, seg_len), loop, seg_end)

    builder.position_at_end(seg_end)
    s_next = builder.add(s_, i1)
    s_.add_incoming(s_next, seg_end)
    for p, n in zip(seg_accs, new):
        p.add_incoming(n, seg_end)
    builder.cbranch(builder.icmp_signed("<", s_next, n_seg), seg_head, after)

    builder.position_at_end(after)
    results = []
    for i in range(PB * NV):
        r = builder.phi(vty)
        r.add_incoming(zero, pre)
        r.add_incoming(new[i], seg_end)
        results.append(r)
    return results


def _emit_outputs(builder, results, k_total):
    """The popcount sums as ``<8 x float>`` (pixel-major like ``results``) and ``K`` splat as float.

    The output ``K - 2 P - corr`` is then :func:`_emit_y` ``(P, K - corr)``: every value is an integer below
    2**24, exact in float32, so the float arithmetic gives the integer result bit for bit (and costs fewer
    vector-pipe slots than 64-bit integer arithmetic before the conversion).
    """
    vty = ir.VectorType(_I64, 8)
    fty = ir.VectorType(ir.FloatType(), 8)
    undef = ir.Constant(vty, ir.Undefined)
    kvec = builder.shuffle_vector(builder.insert_element(undef, k_total, ir.Constant(_I32, 0)), undef,
                                  ir.Constant(ir.VectorType(_I32, 8), [0] * 8))
    return [builder.sitofp(r, fty) for r in results], builder.sitofp(kvec, fty)


def _emit_y(builder, pf, base):
    """``base - 2 * pf`` (exact: integers below 2**24), fused where the target has FMA."""
    fty = ir.VectorType(ir.FloatType(), 8)
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty, fty]),
                                             "llvm.fmuladd.v8f32")
    return builder.call(fmuladd, [pf, ir.Constant(fty, [-2.0] * 8), base])


def _data_ptr(context, builder, arytype, value, offset):
    return builder.gep(context.make_array(arytype)(context, builder, value).data, [offset])


@intrinsic
def _tile_rows(typingctx, a, a_offs, n_seg, seg_len, seg_stride, b, b_off, k_total, out, o_off, o_stride):
    """Micro-kernel, row-major store: ``out[o_off + j*o_stride + c] = K - 2 * sum_l popcount(a_j[l] ^ w_c[l])``.

    ``a_j`` is pixel ``j``'s receptive field, ``n_seg`` segments ``a[a_offs[j] + s*seg_stride :][:seg_len]``
    (``j < PB``), ``w_c[l] = b[b_off + l*OT + c]`` (channel ``c < OT``); the ``PB * NV`` accumulators stay in
    vector registers for the whole receptive field.
    """
    sig = types.void(a, a_offs, n_seg, seg_len, seg_stride, b, b_off, k_total, out, o_off, o_stride)

    def codegen(context, builder, signature, args):
        a_, offs_, nseg_, slen_, sst_, b_, b_off_, k_, out_, o_off_, o_st_ = args
        tys = signature.args
        aptr = _data_ptr(context, builder, tys[0], a_, ir.Constant(_I64, 0))
        offptr = _data_ptr(context, builder, tys[1], offs_, ir.Constant(_I64, 0))
        bptr = _data_ptr(context, builder, tys[5], b_, b_off_)
        optr = _data_ptr(context, builder, tys[8], out_, o_off_)
        fty = ir.VectorType(ir.FloatType(), 8)
        pfs, kf = _emit_outputs(builder, _emit_popcount_loop(builder, aptr, offptr, nseg_, slen_, sst_, bptr), k_)
        ys = [_emit_y(builder, pf, kf) for pf in pfs]
        for j in range(PB):
            for v in range(NV):
                off = builder.add(builder.mul(o_st_, ir.Constant(_I64, j)), ir.Constant(_I64, 8 * v))
                builder.store(ys[j * NV + v], builder.bitcast(builder.gep(optr, [off]), fty.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _emit_nchw_store(builder, pfs, kf, optr, c_stride, alptr, coptr, offptr):
    """``(K - 2 P - corr) * alpha`` (``P`` = ``pfs``, ``K`` = ``kf``) transposed to NCHW: channel ``c``'s ``PB``
    pixels at ``optr[c * c_stride :][:PB]``; pixel ``j``'s correction row starts at ``coptr[offptr[j]]``, alpha
    at ``alptr``."""
    fty = ir.VectorType(ir.FloatType(), 8)
    pty = ir.VectorType(ir.FloatType(), PB)
    offs = [builder.load(builder.gep(offptr, [ir.Constant(_I64, j)])) for j in range(PB)]
    for v in range(NV):
        av = builder.load(builder.bitcast(builder.gep(alptr, [ir.Constant(_I64, 8 * v)]), fty.as_pointer()),
                          align=4)
        cols = []
        for j in range(PB):  # pixel j, channels 8v..8v+7
            cp = builder.gep(coptr, [builder.add(offs[j], ir.Constant(_I64, 8 * v))])
            cv = builder.load(builder.bitcast(cp, fty.as_pointer()), align=4)
            cols.append(builder.fmul(_emit_y(builder, pfs[j * NV + v], builder.fsub(kf, cv)), av))
        if PB == 4:  # 4x8 transpose in unpack/shuffle steps that map to single AVX instructions
            _store_transposed_4x8(builder, cols, optr, c_stride, 8 * v)
            continue
        while len(cols) > 1:  # concatenate: element 8*j + lane
            n = cols[0].type.count
            mask = ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n)))
            cols = [builder.shuffle_vector(cols[i], cols[i + 1], mask) for i in range(0, len(cols), 2)]
        allv = cols[0]
        for lane in range(8):
            mask = ir.Constant(ir.VectorType(_I32, PB), [8 * j + lane for j in range(PB)])
            col = builder.shuffle_vector(allv, ir.Constant(allv.type, ir.Undefined), mask)
            off = builder.mul(c_stride, ir.Constant(_I64, 8 * v + lane))
            builder.store(col, builder.bitcast(builder.gep(optr, [off]), pty.as_pointer()), align=4)


@intrinsic
def _tiles_nchw(typingctx, a, a_offs, n_seg, seg_len, seg_stride, b, b_off, n_tiles, k_total, out, o_off, o_step,
                c_stride, alpha, alpha_off, corr, corr_offs):
    """Micro-kernel, NCHW store: ``n_tiles`` consecutive full tiles for one pixel block in one call.

    Each tile is ``(K - 2 P - corr) * alpha`` transposed in registers, like :func:`_tile_rows`: pixel ``j``
    subtracts ``corr[corr_offs[j] + alpha_off + c]`` (its border correction, 0 inside the image) and multiplies
    by ``alpha[alpha_off + c]``; channel ``c``'s ``PB`` consecutive pixels go to ``out[o_off + c*c_stride :
    ... + PB]``.  Tile ``i`` reads the weights at ``b_off + i * OT * L`` (``L = n_seg * seg_len``), writes from
    ``o_off + i * o_step`` and uses channels ``alpha_off + i * OT ...`` (the per-tile glue stays in registers:
    a short receptive field, e.g. 64 channels x 3x3, spent a third of its time between tiles).
    """
    sig = types.void(a, a_offs, n_seg, seg_len, seg_stride, b, b_off, n_tiles, k_total, out, o_off, o_step,
                     c_stride, alpha, alpha_off, corr, corr_offs)

    def codegen(context, builder, signature, args):
        a_, aoffs_, nseg_, slen_, sst_, b_, b_off_, nt_, k_, out_, o_off_, o_step_, c_st_, al_, al_off_, co_, \
            coffs_ = args
        tys = signature.args
        aptr = _data_ptr(context, builder, tys[0], a_, ir.Constant(_I64, 0))
        aoffptr = _data_ptr(context, builder, tys[1], aoffs_, ir.Constant(_I64, 0))
        bptr0 = _data_ptr(context, builder, tys[5], b_, b_off_)
        optr0 = _data_ptr(context, builder, tys[9], out_, o_off_)
        alptr0 = _data_ptr(context, builder, tys[13], al_, al_off_)
        coptr0 = _data_ptr(context, builder, tys[15], co_, al_off_)
        offptr = _data_ptr(context, builder, tys[16], coffs_, ir.Constant(_I64, 0))
        b_step = builder.mul(builder.mul(nseg_, slen_), ir.Constant(_I64, OT))
        pre = builder.basic_block
        head = builder.append_basic_block("tiles.head")
        done = builder.append_basic_block("tiles.done")
        builder.cbranch(builder.icmp_signed(">", nt_, ir.Constant(_I64, 0)), head, done)
        builder.position_at_end(head)
        i = builder.phi(_I64)
        i.add_incoming(ir.Constant(_I64, 0), pre)
        bptr = builder.gep(bptr0, [builder.mul(i, b_step)])
        optr = builder.gep(optr0, [builder.mul(i, o_step_)])
        ch = builder.mul(i, ir.Constant(_I64, OT))
        ys = _emit_outputs(builder, _emit_popcount_loop(builder, aptr, aoffptr, nseg_, slen_, sst_, bptr), k_)
        _emit_nchw_store(builder, *ys, optr, c_st_, builder.gep(alptr0, [ch]), builder.gep(coptr0, [ch]), offptr)
        i_next = builder.add(i, ir.Constant(_I64, 1))
        i.add_incoming(i_next, builder.basic_block)
        builder.cbranch(builder.icmp_signed("<", i_next, nt_), head, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


def _store_transposed_4x8(builder, rows, optr, c_stride, c0):
    """Store ``rows[j][c]`` (4 pixels x 8 channels, ``<8 x float>``) as ``optr[(c0 + c) * c_stride + j]``.

    ``vunpcklps``/``vunpckhps`` then ``vshufps`` leave, in each 128-bit half, one channel's 4 pixels
    (channels ``c`` and ``c + 4``); each half is one 16-byte store.
    """
    def sh(x, y, idx):
        return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(_I32, len(idx)), idx))

    r0, r1, r2, r3 = rows
    lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t0, t1, t2, t3 = sh(r0, r1, lo), sh(r0, r1, hi), sh(r2, r3, lo), sh(r2, r3, hi)
    first, second = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    u = [sh(t0, t2, first), sh(t0, t2, second), sh(t1, t3, first), sh(t1, t3, second)]  # channels c | c + 4
    pty = ir.VectorType(ir.FloatType(), 4)
    undef = ir.Constant(u[0].type, ir.Undefined)
    for c in range(4):
        for half in range(2):
            col = sh(u[c], undef, [4 * half + i for i in range(4)])
            off = builder.mul(c_stride, ir.Constant(_I64, c0 + c + 4 * half))
            builder.store(col, builder.bitcast(builder.gep(optr, [off]), pty.as_pointer()), align=4)


@intrinsic
def _tile_bits(typingctx, a, a_offs, n_seg, seg_len, seg_stride, b, b_off, k_total, corr, corr_base, corr_offs,
               lo, hi, masks):
    """Micro-kernel, bit output: ``masks[j]`` bit ``c`` = ``lo[c] <= K - 2 P - corr <= hi[c]`` for the tile's channels.

    ``corr[corr_offs[j] + corr_base + c]`` is pixel ``j``'s border correction; ``lo``/``hi`` are
    indexed from ``corr_base`` too (the tile's first channel).
    """
    sig = types.void(a, a_offs, n_seg, seg_len, seg_stride, b, b_off, k_total, corr, corr_base, corr_offs, lo, hi,
                     masks)

    def codegen(context, builder, signature, args):
        a_, aoffs_, nseg_, slen_, sst_, b_, b_off_, k_, co_, base_, coffs_, lo_, hi_, masks_ = args
        tys = signature.args
        aptr = _data_ptr(context, builder, tys[0], a_, ir.Constant(_I64, 0))
        aoffptr = _data_ptr(context, builder, tys[1], aoffs_, ir.Constant(_I64, 0))
        bptr = _data_ptr(context, builder, tys[5], b_, b_off_)
        coptr = _data_ptr(context, builder, tys[8], co_, base_)
        offptr = _data_ptr(context, builder, tys[10], coffs_, ir.Constant(_I64, 0))
        loptr = _data_ptr(context, builder, tys[11], lo_, base_)
        hiptr = _data_ptr(context, builder, tys[12], hi_, base_)
        mptr = _data_ptr(context, builder, tys[13], masks_, ir.Constant(_I64, 0))
        fty = ir.VectorType(ir.FloatType(), 8)

        def vload(ptr, off):
            return builder.load(builder.bitcast(builder.gep(ptr, [off]), fty.as_pointer()), align=4)

        ys = _emit_outputs(builder, _emit_popcount_loop(builder, aptr, aoffptr, nseg_, slen_, sst_, bptr), k_)
        los = [vload(loptr, ir.Constant(_I64, 8 * v)) for v in range(NV)]
        his = [vload(hiptr, ir.Constant(_I64, 8 * v)) for v in range(NV)]
        for j in range(PB):
            off = builder.load(builder.gep(offptr, [ir.Constant(_I64, j)]))
            mask = ir.Constant(_I64, 0)
            for v in range(NV):
                cv = vload(coptr, builder.add(off, ir.Constant(_I64, 8 * v)))
                y = _emit_y(builder, ys[0][j * NV + v], builder.fsub(ys[1], cv))
                inside = builder.and_(builder.fcmp_ordered("<=", los[v], y), builder.fcmp_ordered("<=", y, his[v]))
                bits = builder.zext(builder.bitcast(inside, ir.IntType(8)), _I64)
                mask = builder.or_(mask, builder.shl(bits, ir.Constant(_I64, 8 * v)))
            builder.store(mask, builder.gep(mptr, [ir.Constant(_I64, j)]))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _block_start(b, plane):
    """First flat pixel of block ``b``: blocks of ``PB`` pixels over the output plane, the last one shifted back
    to end at the plane's end (a few pixels computed twice) so that every block is full."""
    q0 = b * PB
    if q0 + PB > plane and plane >= PB:
        q0 = plane - PB
    return q0


@njit(cache=True, nogil=True)
def _block_offsets(n, q0, nb, stride, hp, wp, n_words, w_out, row_off, col_off, aoffs, coffs):
    """Per pixel ``j`` of the block at flat pixel ``q0`` of image ``n``: its receptive field's first word in the
    packed input (``aoffs``) and its border-correction row (``coffs``); a partial block repeats its last pixel."""
    oh = q0 // w_out
    ow = q0 % w_out
    for j in range(PB):  # one division per block, then step along the row
        aoffs[j] = ((n * hp + oh * stride) * wp + ow * stride) * n_words
        coffs[j] = row_off[oh] + col_off[ow]
        if j + 1 < nb:
            ow += 1
            if ow == w_out:
                ow = 0
                oh += 1


@njit(cache=True, nogil=True)
def _conv_task(task, xf, wt, k, stride, k_total, alpha, corr, row_off, col_off, n_groups, n_chunks, of,
               hp, wp, n_words, n_out, h_out, w_out, res, aoffs, coffs):
    """One task of :func:`binary_conv`: image ``n``, pixel-block group ``g`` and output-channel chunk of
    ``task = (n * n_groups + g) * n_chunks + chunk``.

    Output pixels are taken in blocks of ``PB`` over the flattened ``h_out * w_out`` plane (not per row),
    so rows narrower than a multiple of ``PB`` waste nothing but the last block's overlap.
    """
    plane = h_out * w_out
    length = k * k * n_words
    n_tiles = wt.shape[0] // (length * OT)
    tiles_per_chunk = (n_tiles + n_chunks - 1) // n_chunks
    n_blocks = (plane + PB - 1) // PB
    blocks_per_group = (n_blocks + n_groups - 1) // n_groups
    chunk = task % n_chunks
    g = (task // n_chunks) % n_groups
    n = task // (n_chunks * n_groups)
    t0 = chunk * tiles_per_chunk
    t1 = min(n_tiles, t0 + tiles_per_chunk)
    seg_len = k * n_words
    seg_stride = wp * n_words
    for b in range(g * blocks_per_group, min(n_blocks, (g + 1) * blocks_per_group)):
        q0 = _block_start(b, plane)
        nb = min(PB, plane - q0)
        _block_offsets(n, q0, nb, stride, hp, wp, n_words, w_out, row_off, col_off, aoffs, coffs)
        t_full = t0
        if nb == PB:  # full tiles of a full block: one call
            t_full = max(t0, min(t1, n_out // OT))
            _tiles_nchw(xf, aoffs, k, seg_len, seg_stride, wt, t0 * length * OT, t_full - t0, k_total,
                        of, (n * n_out + t0 * OT) * plane + q0, OT * plane, plane, alpha, t0 * OT, corr, coffs)
        for t in range(t_full, t1):
            _tile_rows(xf, aoffs, k, seg_len, seg_stride, wt, t * length * OT, k_total, res, 0, OT)
            for j in range(nb):
                for c in range(min(OT, n_out - t * OT)):
                    o = t * OT + c
                    v = res[j * OT + c] - corr[coffs[j] + o]
                    of[(n * n_out + o) * plane + q0 + j] = v * alpha[o]


@njit(parallel=True, cache=True, nogil=True)
def _binary_conv_parallel(xp, wt, k, stride, k_total, alpha, corr, row_off, col_off, n_groups, n_chunks, out):
    _, hp, wp, n_words = xp.shape
    n_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    xf = xp.reshape(xp.size)
    of = out.reshape(out.size)
    for task in prange(out.shape[0] * n_groups * n_chunks):
        _conv_task(task, xf, wt, k, stride, k_total, alpha, corr, row_off, col_off, n_groups, n_chunks, of,
                   hp, wp, n_words, n_out, h_out, w_out, np.empty(PB * OT, np.float32), np.zeros(PB, np.int64),
                   np.zeros(PB, np.int64))


@njit(cache=True, nogil=True)
def _binary_conv_serial(xp, wt, k, stride, k_total, alpha, corr, row_off, col_off, n_groups, n_chunks, out):
    _, hp, wp, n_words = xp.shape
    n_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    xf = xp.reshape(xp.size)
    of = out.reshape(out.size)
    res = np.empty(PB * OT, np.float32)
    aoffs = np.zeros(PB, np.int64)
    coffs = np.zeros(PB, np.int64)
    for task in range(out.shape[0] * n_groups * n_chunks):
        _conv_task(task, xf, wt, k, stride, k_total, alpha, corr, row_off, col_off, n_groups, n_chunks, of,
                   hp, wp, n_words, n_out, h_out, w_out, res, aoffs, coffs)


@njit(cache=True, nogil=True)
def _conv_bits_task(task, xf, wt, k, stride, k_total, corr, row_off, col_off, lo, hi, yf, n_groups,
                    hp, wp, n_words, n_out, h_out, w_out, y_hp, y_wp, y_words, y_pad, masks, aoffs, coffs, words):
    """One task of :func:`binary_conv_bits` (image ``task // n_groups``, pixel-block group ``task % n_groups``):
    packed bits ``lo[o] <= y <= hi[o]`` instead of floats."""
    plane = h_out * w_out
    length = k * k * n_words
    n_tiles = wt.shape[0] // (length * OT)
    per_word = 64 // OT
    n_blocks = (plane + PB - 1) // PB
    blocks_per_group = (n_blocks + n_groups - 1) // n_groups
    n = task // n_groups
    g = task % n_groups
    seg_len = k * n_words
    seg_stride = wp * n_words
    for b in range(g * blocks_per_group, min(n_blocks, (g + 1) * blocks_per_group)):
        q0 = _block_start(b, plane)
        nb = min(PB, plane - q0)
        _block_offsets(n, q0, nb, stride, hp, wp, n_words, w_out, row_off, col_off, aoffs, coffs)
        for gw in range(y_words):  # one 64-channel output word = per_word tiles
            for j in range(PB):
                words[j] = 0
            for t in range(gw * per_word, min(n_tiles, (gw + 1) * per_word)):
                _tile_bits(xf, aoffs, k, seg_len, seg_stride, wt, t * length * OT, k_total, corr, t * OT, coffs,
                           lo, hi, masks)
                sh = np.uint64(OT * (t - gw * per_word))
                for j in range(PB):
                    words[j] |= np.uint64(masks[j]) << sh
            for j in range(nb):
                oh = (q0 + j) // w_out
                ow = (q0 + j) % w_out
                yf[((n * y_hp + oh + y_pad) * y_wp + ow + y_pad) * y_words + gw] = words[j]


@njit(parallel=True, cache=True, nogil=True)
def _binary_conv_bits_parallel(xp, wt, k, stride, k_total, corr, row_off, col_off, lo, hi, h_out, w_out, yp,
                               y_pad, n_groups):
    _, hp, wp, n_words = xp.shape
    xf = xp.reshape(xp.size)
    yf = yp.reshape(yp.size)
    for task in prange(xp.shape[0] * n_groups):
        _conv_bits_task(task, xf, wt, k, stride, k_total, corr, row_off, col_off, lo, hi, yf, n_groups,
                        hp, wp, n_words, lo.shape[0], h_out, w_out, yp.shape[1], yp.shape[2], yp.shape[3], y_pad,
                        np.zeros(PB, np.int64), np.zeros(PB, np.int64), np.zeros(PB, np.int64),
                        np.zeros(PB, np.uint64))


@njit(cache=True, nogil=True)
def _binary_conv_bits_serial(xp, wt, k, stride, k_total, corr, row_off, col_off, lo, hi, h_out, w_out, yp,
                             y_pad, n_groups):
    _, hp, wp, n_words = xp.shape
    xf = xp.reshape(xp.size)
    yf = yp.reshape(yp.size)
    masks = np.zeros(PB, np.int64)
    aoffs = np.zeros(PB, np.int64)
    coffs = np.zeros(PB, np.int64)
    words = np.zeros(PB, np.uint64)
    for task in range(xp.shape[0] * n_groups):
        _conv_bits_task(task, xf, wt, k, stride, k_total, corr, row_off, col_off, lo, hi, yf, n_groups,
                        hp, wp, n_words, lo.shape[0], h_out, w_out, yp.shape[1], yp.shape[2], yp.shape[3], y_pad,
                        masks, aoffs, coffs, words)


def pixel_groups(h_out: int, w_out: int, threads: int) -> int:
    """Pixel-block groups per image: 1 on one thread, else about one per output row (tasks to balance)."""
    if threads <= 1:
        return 1
    n_blocks = -(-(h_out * w_out) // PB)
    return max(1, min(n_blocks, h_out))


#: receptive fields up to this many bits: the epilogue's float arithmetic is exact below 2**24
MAX_K_TOTAL = (1 << 24) - 1


def check_k_total(k_total: int) -> None:
    """Raise ValueError unless ``1 <= k_total <= MAX_K_TOTAL``."""
    if not 0 < k_total <= MAX_K_TOTAL:
        raise ValueError(f"receptive field of {k_total} bits (k*k*C_in) is outside 1..{MAX_K_TOTAL}: the exact "
                         f"float epilogue needs integers below 2**24")


def binary_conv_bits(xp: np.ndarray, wt: np.ndarray, k: int, stride: int, pad: int, k_total: int,
                     correction: tuple[np.ndarray, np.ndarray, np.ndarray], lo: np.ndarray, hi: np.ndarray,
                     h_out: int, w_out: int, yp: np.ndarray, y_pad: int, threads: int = 1) -> None:
    """Binary conv whose output is packed again: bit ``o`` set where ``lo[o] <= y <= hi[o]`` (``y`` the exact
    integer convolution), written into the interior of the zero-bordered NHWC words ``yp``.

    ``lo``/``hi`` are float32 of length ``O_pad`` (padded channels: ``+inf``/``-inf``).

    With ``[lo, hi]`` the set of outputs that a per-channel monotone chain (BN -> hardtanh ->
    sign) maps to ``-1``, the next binary conv reads these bits directly.
    """
    check_k_total(k_total)
    fn = _binary_conv_bits_serial if threads <= 1 else _binary_conv_bits_parallel
    corr, row_off, col_off = correction
    fn(xp, wt, k, stride, k_total, corr, row_off, col_off, lo, hi, h_out, w_out, yp, y_pad,
       pixel_groups(h_out, w_out, threads))


def border_correction(tapsum: np.ndarray, k: int, stride: int, pad: int, in_h: int, in_w: int,
                      h_out: int, w_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact zero-padding correction as a small table: ``(corr, row_off, col_off)``.

    With ``+1`` padding a tap that falls outside the image adds ``tapsum[tap, o]`` (the sum
    of that tap's weight signs); output pixel ``(oh, ow)`` must subtract
    ``corr[row_off[oh] + col_off[ow] + o]``.  Rows (columns) are grouped by which kernel rows
    (columns) are valid, so the table has a few entries per border class (zero inside).
    """
    o_pad = tapsum.shape[1]
    ki = np.arange(k)
    row_valid = ((np.arange(h_out)[:, None] * stride - pad + ki) >= 0) & (
        (np.arange(h_out)[:, None] * stride - pad + ki) < in_h)
    col_valid = ((np.arange(w_out)[:, None] * stride - pad + ki) >= 0) & (
        (np.arange(w_out)[:, None] * stride - pad + ki) < in_w)
    row_cls, row_idx = np.unique(row_valid, axis=0, return_inverse=True)
    col_cls, col_idx = np.unique(col_valid, axis=0, return_inverse=True)
    invalid = ~(row_cls[:, None, :, None] & col_cls[None, :, None, :])  # (rc, cc, ki, kj)
    table = invalid.reshape(len(row_cls) * len(col_cls), k * k).astype(np.int64) @ tapsum  # (rc*cc, o_pad)
    corr = np.zeros(table.size + o_pad, np.float32)  # + one zero row (the tile may read a full OT block)
    corr[: table.size] = table.reshape(-1)
    row_off = (row_idx.reshape(-1) * len(col_cls) * o_pad).astype(np.int64)
    col_off = (col_idx.reshape(-1) * o_pad).astype(np.int64)
    return corr, row_off, col_off


def binary_conv(xp: np.ndarray, wt: np.ndarray, k: int, stride: int, pad: int, k_total: int, alpha: np.ndarray,
                correction: tuple[np.ndarray, np.ndarray, np.ndarray], out: np.ndarray,
                threads: int | None = None) -> None:
    """XNOR-popcount convolution of packed ``xp`` with kernel-form weights ``wt`` into NCHW float32 ``out``.

    Args:
        xp: ``(N, in_h + 2 pad, in_w + 2 pad, words)`` uint64 (zero border; ``pad`` is implied by its shape).
        wt: 1-D uint64 weight tiles ``[O_pad / OT][k*k*words][OT]``.
        k_total: ``k * k * C_in``.
        alpha: ``(O_pad,)`` float32 per-output-channel scale (ones when unscaled).
        correction: :func:`border_correction` of the layer for this input size.
        out: ``(N, O, H_out, W_out)`` float32, fully overwritten.
        threads: numba threads (default: numba's current setting); 1 runs without a parallel launch.
    """
    check_k_total(k_total)
    threads = numba_get_threads() if threads is None else threads
    corr, row_off, col_off = correction
    if threads == 1:
        _binary_conv_serial(xp, wt, k, stride, k_total, alpha, corr, row_off, col_off, 1, 1, out)
        return
    groups = pixel_groups(out.shape[2], out.shape[3], threads)
    chunks = chunks_for(out.shape[0] * groups, alpha.shape[0] // OT, threads)
    _binary_conv_parallel(xp, wt, k, stride, k_total, alpha, corr, row_off, col_off, groups, chunks, out)


