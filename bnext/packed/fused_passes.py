"""numba kernels of :class:`~bnext.packed.fused_bnext.FusedInfoRCPModule`: a BNext module's float work, per image.

One call of :func:`module_float` runs, for each image of the batch (``prange`` over images, so one
image's planes stay in the core's L2 cache between the two passes):

1. pass A over the conv output ``y``: ``x = PReLU(y * a + b)`` (eval BN as a per-channel affine) in
   place, and the recoupling mix ``s * v + (1 - s) * x`` summed per plane (float64, the SE pooling);
2. the SE MLP of paper Fig. 3c on the plane means: ``sigmoid(W2 relu(W1 m + b1) + b2)``;
3. pass B: ``out = bn_out((x * gate) [* r]) + r`` and, when the next module's binary conv reads
   ``out`` directly, its input bits ``sign(out + shift_next) = -1`` packed into that conv's zero-bordered
   NHWC words (what :meth:`PackedBinaryConv2d.pack_input` computes from ``out``, bit for bit).

The shortcut ``r`` is never materialised when it is elementwise in the module input ``u``:
``r = PReLU(src)`` (ELM: ``src = u`` or the 2x2-pooled ``u``) or ``r = src * ra + rb`` (the BN of a
real 1x1 projection whose conv output is ``src``); ``v`` (the recoupling partner) is ``r`` or its own
array.  :func:`prelu_avgpool2x2` is the exact ``avg_pool2x2(PReLU(u))`` of a strided shortcut.

Float operations are the module's own, in its order, except the per-plane sums (float64 partial sums
in any order: ``reassoc`` in :func:`_plane_a` only) and the SE dot products (float32, sequential): results
agree with torch to a few ulp (the tolerance contract of ``landscape.engine.TOLERANCE``).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
from numba import njit, prange

from .packing import abs_bits

#: ``r_mode``: r = src; r = PReLU(src) with per-channel slopes; r = src * ra + rb (projection BN)
R_SRC, R_PRELU, R_AFFINE = 0, 1, 2


@njit(inline="always")
def _r(src, r_mode, rw, ra, rb):
    if r_mode == R_PRELU:
        return src if src > 0 else rw * src
    if r_mode == R_AFFINE:
        return src * ra + rb
    return src


@njit(fastmath={"reassoc"}, cache=True, nogil=True)
def _pass_a(n, y, v, v_is_r, src, r_mode, rw, ra, rb, a, b, pw, s, s1, mix, msum):
    """Pass A on image ``n``: ``y <- prelu(y*a + b)``; ``msum[n, c] = sum(s*v + s1*y)`` per plane (float64 sums in
    any order: ``reassoc``, so that they vectorize)."""
    for c in range(y.shape[1]):
        ac, bc, wc, sc, s1c = a[c], b[c], pw[c], s[c], s1[c]
        rwc, rac, rbc = rw[c], ra[c], rb[c]
        acc = 0.0
        for p in range(y.shape[2]):
            z = y[n, c, p] * ac + bc
            x = z if z > 0 else wc * z
            y[n, c, p] = x
            if mix:
                vp = _r(src[n, c, p], r_mode, rwc, rac, rbc) if v_is_r else v[n, c, p]
                acc += np.float64(sc * vp + s1c * x)
        msum[n, c] = acc


@njit(cache=True, nogil=True)
def _se_gate(msum, plane, w1t, b1, w2t, b2, gate):
    """SqueezeExpand on the plane means ``msum / plane``: ``gate = sigmoid(w2 @ relu(w1 @ m + b1) + b2)``.

    ``w1t`` is ``(C, hidden)`` and ``w2t`` ``(hidden, C)`` (transposed): each dot product still sums in
    input-channel order, but the loops run over contiguous outputs (vectorized).
    """
    c_n, hid = w1t.shape
    h = np.zeros(hid, np.float32)
    for c in range(c_n):
        mc = np.float32(msum[c] / plane)
        for j in range(hid):
            h[j] += w1t[c, j] * mc
    zero = np.float32(0.0)
    for j in range(hid):
        z = h[j] + b1[j]
        h[j] = z if z > zero else zero
    g = np.zeros(c_n, np.float32)
    for j in range(hid):
        hj = h[j]
        for c in range(c_n):
            g[c] += w2t[j, c] * hj
    one = np.float32(1.0)
    for c in range(c_n):
        gate[c] = one / (one + np.exp(-(g[c] + b2[c])))


@njit(cache=True, nogil=True)
def _pass_b(n, x, src, out, gate, r_mode, rw, ra, rb, use_g, mul_r, a2, b2, use_bn, emit, shift, xp, pad, width, tmp,
            want_m, marg):
    """Pass B on image ``n``: ``out = bn_out((x * gate) [* r]) + r``; with ``emit`` also the bits
    ``sign(out + shift) = -1`` (as ``pack_input`` decides them) into the interior of ``xp``, and with
    ``want_m`` (and ``emit``) ``marg[n]`` (int32 bits, :func:`~bnext.packed.packing.abs_bits`) lowered to the
    smallest ``|out + shift|`` (the audit's margin)."""
    zero = np.float32(0.0)
    c_n, p_n = x.shape[1], x.shape[2]
    m = marg[n]
    for c in range(c_n):
        gc, rwc, rac, rbc, ac, bc = gate[n, c], rw[c], ra[c], rb[c], a2[c], b2[c]
        bit = np.uint64(c % 64)
        sh = shift[c]
        for p in range(p_n):
            z = x[n, c, p]
            if use_g:
                z = z * gc
            rv = _r(src[n, c, p], r_mode, rwc, rac, rbc)
            if mul_r:
                z = z * rv
            if use_bn:
                z = z * ac + bc
            o = z + rv
            out[n, c, p] = o
            if emit:
                tmp[p] |= np.uint64(not (o + sh >= zero)) << bit
                if want_m:  # an integer minimum (abs_bits): the loop still vectorizes
                    m = min(m, abs_bits(o + sh))
        if emit:
            if c % 64 == 63 or c == c_n - 1:
                wd = c // 64
                for i in range(p_n // width):
                    for j in range(width):
                        xp[n, i + pad, j + pad, wd] = tmp[i * width + j]
                tmp[:] = 0
    marg[n] = m


@njit(cache=True, nogil=True)
def _image(n, phase, y, src, r_mode, rw, ra, rb, v, v_is_r, a, b, pw, s, s1, mix,
           w1, b1, w2, b2, gate, msum, use_g, mul_r, a2, b2o, use_bn, out, emit, shift, xp, pad, width, tmp, want_m,
           marg):
    if phase != 2:
        _pass_a(n, y, v, v_is_r, src, r_mode, rw, ra, rb, a, b, pw, s, s1, mix, msum)
        if phase == 0 and use_g:
            _se_gate(msum[n], y.shape[2], w1, b1, w2, b2, gate[n])
    if phase != 1:
        _pass_b(n, y, src, out, gate, r_mode, rw, ra, rb, use_g, mul_r, a2, b2o, use_bn, emit, shift, xp, pad, width,
                tmp, want_m, marg)


@njit(parallel=True, cache=True, nogil=True)
def _module_parallel(phase, y, src, r_mode, rw, ra, rb, v, v_is_r, a, b, pw, s, s1, mix,
                     w1, b1, w2, b2, gate, msum, use_g, mul_r, a2, b2o, use_bn, out, emit, shift, xp, pad, width,
                     want_m, marg):
    for n in prange(y.shape[0]):
        _image(n, phase, y, src, r_mode, rw, ra, rb, v, v_is_r, a, b, pw, s, s1, mix, w1, b1, w2, b2, gate, msum,
               use_g, mul_r, a2, b2o, use_bn, out, emit, shift, xp, pad, width, np.zeros(y.shape[2], np.uint64), want_m,
               marg)


@njit(cache=True, nogil=True)
def _module_serial(phase, y, src, r_mode, rw, ra, rb, v, v_is_r, a, b, pw, s, s1, mix,
                   w1, b1, w2, b2, gate, msum, use_g, mul_r, a2, b2o, use_bn, out, emit, shift, xp, pad, width, want_m,
                   marg):
    tmp = np.zeros(y.shape[2], np.uint64)
    for n in range(y.shape[0]):
        _image(n, phase, y, src, r_mode, rw, ra, rb, v, v_is_r, a, b, pw, s, s1, mix, w1, b1, w2, b2, gate, msum,
               use_g, mul_r, a2, b2o, use_bn, out, emit, shift, xp, pad, width, tmp, want_m, marg)


def module_float(phase: int, y: np.ndarray, src: np.ndarray, r_mode: int, rw: np.ndarray, ra: np.ndarray,
                 rb: np.ndarray, v: np.ndarray, v_is_r: bool, a: np.ndarray, b: np.ndarray, pw: np.ndarray,
                 s: np.ndarray, s1: np.ndarray, mix: bool, se: tuple[np.ndarray, ...], gate: np.ndarray,
                 msum: np.ndarray, use_g: bool, mul_r: bool, a2: np.ndarray, b2: np.ndarray, use_bn: bool,
                 out: np.ndarray, bits: tuple[np.ndarray, np.ndarray, int] | None, width: int,
                 threads: int, margins: np.ndarray | None = None) -> None:
    """The float work of one module (module docstring) on ``(N, C, P)`` float32 planes.

    ``phase``: 0 all of it (SE gate computed from ``se = (w1, b1, w2, b2)``), 1 pass A only (``msum``
    filled), 2 pass B only (``gate`` given).  ``y`` is overwritten with ``x``.  ``bits`` =
    ``(shift_next, xp_next, pad_next)`` packs ``out`` for the next binary conv into the zero-initialised
    ``xp_next`` (``width`` = the image width, ``P = H * width``).  ``threads`` <= 1 runs on the calling thread.
    ``margins`` (with ``bits``): ``margins[n]`` is lowered to the smallest ``|out[n] + shift_next|``, the
    binary margin of the next conv's input that ``landscape.engine.audit.MarginRecorder`` records.
    """
    w1, b1, w2, b2s = se
    emit = bits is not None
    shift, xp, pad = bits if emit else (a, np.zeros((1, 1, 1, 1), np.uint64), 0)
    want_m = emit and margins is not None
    marg = (margins if want_m else np.zeros(y.shape[0], np.float32)).view(np.int32)  # abs_bits patterns
    fn = _module_parallel if threads > 1 and y.shape[0] > 1 else _module_serial
    fn(phase, y, src, r_mode, rw, ra, rb, v, v_is_r, a, b, pw, s, s1, mix, w1, b1, w2, b2s, gate, msum,
       use_g, mul_r, a2, b2, use_bn, out, emit, shift, xp, pad, width, want_m, marg)


@njit(cache=True, nogil=True)
def _pool_plane(u, sw, out, t):
    h_in, w_in = u.shape[2], u.shape[3]
    c_n = u.shape[1]
    n, c = t // c_n, t % c_n
    wc = sw[c]
    quarter = np.float32(4.0)
    for oh in range(out.shape[2]):
        i = 2 * oh
        if i + 1 < h_in:  # full windows: (((a + b) + c) + d) / 4 as torch sums them
            r0, r1, o = u[n, c, i], u[n, c, i + 1], out[n, c, oh]
            for ow in range(w_in // 2):
                j = 2 * ow
                a, b, c_, d = r0[j], r0[j + 1], r1[j], r1[j + 1]
                a = a if a > 0 else wc * a
                b = b if b > 0 else wc * b
                c_ = c_ if c_ > 0 else wc * c_
                d = d if d > 0 else wc * d
                o[ow] = (((a + b) + c_) + d) / quarter
            first = w_in // 2
        else:
            first = 0
        for ow in range(first, out.shape[3]):  # windows cut by the border (odd sizes)
            acc = np.float32(0.0)
            cnt = 0
            for ii in range(i, min(i + 2, h_in)):
                for j in range(2 * ow, min(2 * ow + 2, w_in)):
                    z = u[n, c, ii, j]
                    acc += z if z > 0 else wc * z
                    cnt += 1
            out[n, c, oh, ow] = acc / np.float32(cnt)


@njit(parallel=True, cache=True, nogil=True)
def _pool_parallel(u, sw, out):
    for t in prange(u.shape[0] * u.shape[1]):
        _pool_plane(u, sw, out, t)


@njit(cache=True, nogil=True)
def _pool_serial(u, sw, out):
    for t in range(u.shape[0] * u.shape[1]):
        _pool_plane(u, sw, out, t)


def pool_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Output shape of :func:`prelu_avgpool2x2` for an NCHW input shape (ceil mode)."""
    n, c, h, w = shape
    return n, c, (h + 1) // 2, (w + 1) // 2


def prelu_avgpool2x2(u: np.ndarray, sw: np.ndarray, threads: int, out: np.ndarray | None = None) -> np.ndarray:
    """``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(PReLU(u))`` of NCHW float32 ``u`` (slopes ``sw``
    per channel; ones: the plain pool), summing each window row by row and dividing by its valid count."""
    out = np.empty(pool_shape(u.shape), np.float32) if out is None else out
    (_pool_parallel if threads > 1 else _pool_serial)(u, sw, out)
    return out


class BufferPool:
    """Float/word arrays reused across calls once nothing refers to what was handed out.

    A fresh multi-megabyte array costs a page fault per 4 KiB page on first touch (the allocator returns
    freed blocks of that size to the OS); at batch 32 that was a third of a BNext-18 module's float time.
    Each buffer is handed out as a new view object (a torch tensor made from it keeps that view alive,
    and so do all tensors and arrays derived from it); the buffer is reused only after the view is gone.
    Per key and thread only the latest shape is kept (at most :attr:`per_key` buffers), so memory stays
    about one batch's activations per thread that runs batches.
    """

    per_key = 2

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str], tuple[tuple, list[list]]] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """A ``shape`` array of ``dtype`` for ``key``: zero-filled when new, else what was last written to it
        (callers that rely on zeros, e.g. a border, write only where they wrote before)."""
        spec = (tuple(shape), np.dtype(dtype).str)
        key = (threading.get_ident(), key)  # batches side by side on worker threads: buffers of their own
        kept = self._slots.get(key)
        if kept is None or kept[0] != spec:
            kept = self._slots[key] = (spec, [])
        slots = kept[1]
        for slot in slots:
            if slot[1]() is None:
                break
        else:
            if len(slots) >= self.per_key:  # all still in use: a plain array, not kept
                return np.zeros(shape, dtype)
            slot = [np.zeros(shape, dtype), None]
            slots.append(slot)
        view = slot[0].view()
        slot[1] = weakref.ref(view)
        return view

    def clear(self) -> None:
        """Drop every buffer."""
        self._slots.clear()
