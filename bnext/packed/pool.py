"""Exact numba max-pool (the stem's 3x3 stride-2 pool of an ImageNet-size BNext): torch's values, bit for bit."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import threads as _threads  # noqa: F401  (chooses numba's threading layer before any parallel call)


@njit(cache=True, nogil=True)
def _maxpool_plane(x, out, p, k, stride, pad, m, ph):
    """Max-pool plane ``p`` of NCHW ``x`` (flattened to ``(N*C, H, W)``) with -inf padding, NaN-propagating.

    Every output visits its window's taps in torch's row-major order with torch's rule (``v > m or v is NaN``),
    so values, signed zeros and NaN payloads match; the loops run over a whole output row per tap (vectorized)
    on the input row split by column phase (``ph[r, w] = row[stride * w + r]``, contiguous loads).
    ``m`` (``w_out``) and ``ph`` (``(stride, ceil(w_in / stride))``) are scratch.
    """
    h_in, w_in = x.shape[1], x.shape[2]
    h_out, w_out = out.shape[1], out.shape[2]
    for oh in range(h_out):
        h0 = oh * stride - pad
        for ow in range(w_out):
            m[ow] = -np.inf
        for i in range(max(h0, 0), min(h0 + k, h_in)):
            if stride == 2:  # the stem's pool: an interleaved pair of loads the vectorizer handles
                for w in range(w_in // 2):
                    ph[0, w] = x[p, i, 2 * w]
                    ph[1, w] = x[p, i, 2 * w + 1]
                if w_in % 2:
                    ph[0, w_in // 2] = x[p, i, w_in - 1]
            else:
                for w in range(w_in):
                    ph[w % stride, w // stride] = x[p, i, w]
            for j in range(k):
                d = j - pad  # input column of output ow: stride * ow + d = stride * (ow + off) + r
                r = d % stride
                off = (d - r) // stride
                src = ph[r]
                for ow in range(max(0, (stride - 1 - d) // stride), min(w_out, (w_in - 1 - d) // stride + 1)):
                    v = src[np.uint64(ow + off)]  # unsigned: no wraparound test, the loop vectorizes
                    mo = m[np.uint64(ow)]
                    m[np.uint64(ow)] = v if ((v > mo) | (v != v)) else mo
        for ow in range(w_out):
            out[p, oh, ow] = m[ow]


@njit(parallel=True, cache=True, nogil=True)
def _maxpool_parallel(x, out, k, stride, pad):
    for p in prange(x.shape[0]):
        _maxpool_plane(x, out, p, k, stride, pad, np.empty(out.shape[2], np.float32),
                       np.empty((stride, (x.shape[2] + stride - 1) // stride), np.float32))


@njit(cache=True, nogil=True)
def _maxpool_serial(x, out, k, stride, pad):
    m = np.empty(out.shape[2], np.float32)
    ph = np.empty((stride, (x.shape[2] + stride - 1) // stride), np.float32)
    for p in range(x.shape[0]):
        _maxpool_plane(x, out, p, k, stride, pad, m, ph)


def maxpool2d(x: np.ndarray, out: np.ndarray, k: int, stride: int, pad: int, threads: int = 1) -> None:
    """``max_pool2d`` of NCHW float32 ``x`` into ``out`` (same values as torch's, bit for bit)."""
    n, c, h, w = x.shape
    fn = _maxpool_parallel if threads > 1 else _maxpool_serial
    fn(x.reshape(n * c, h, w), out.reshape(n * c, out.shape[2], out.shape[3]), k, stride, pad)
