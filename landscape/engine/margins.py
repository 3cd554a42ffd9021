"""Per-image binary margins in one read-only pass (numba): ``min |x + shift|`` over every element.

The engine's audit (:mod:`landscape.engine.audit`) asks, at every grid point, which images came closest
to a flipped activation in the fast forward. Done with torch ops that costs an add, an abs and a
reduction over every binarized activation (written and read again); this kernel reads each activation
once, in parallel over images, and adds in float32 exactly as the binarizing layers do.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

# numba's OpenMP pool spin-waits next to torch's (see bnext/packed/kernels.py); the workqueue layer sleeps.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


@njit(parallel=True, cache=True)
def _min_abs_shift(x: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n, c, k = x.shape
    for i in prange(n):
        m = out[i]
        for j in range(c):
            s = shift[j]
            for t in range(k):
                v = abs(x[i, j, t] + s)
                if v < m:
                    m = v
        out[i] = m


@njit(cache=True, nogil=True)
def _min_abs_shift_serial(x: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n, c, k = x.shape
    for i in range(n):
        m = out[i]
        for j in range(c):
            s = shift[j]
            for t in range(k):
                v = abs(x[i, j, t] + s)
                if v < m:
                    m = v
        out[i] = m


def min_abs_shift_(x: np.ndarray, shift: np.ndarray | None, out: np.ndarray) -> None:
    """``out[i] = min(out[i], min |x[i] + shift|)`` for a float32 ``(N, C, ...)`` array (shift per channel).

    On a worker of :mod:`landscape.threads` (batches evaluated side by side) the kernel runs serially on
    that worker: numba's workqueue pool must not be entered from two threads at once."""
    from ..threads import in_worker

    x3 = np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0], x.shape[1], -1)
    s = np.zeros(x.shape[1], np.float32) if shift is None else np.ascontiguousarray(shift, np.float32).reshape(-1)
    (_min_abs_shift_serial if in_worker() else _min_abs_shift)(x3, s, out)
