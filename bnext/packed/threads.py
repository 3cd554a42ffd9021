"""Thread control of the packed engine's numba kernels: thread count, serial-or-parallel choice per shape."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numba
from numba.np.ufunc import parallel as _numba_parallel

# numba's OpenMP pool spin-waits after every parallel region; next to torch's own OpenMP pool on
# a small machine the two steal each other's cores (measured on 2 cores: the float model ran 3-6x
# slower beside an omp-layer numba pool).  The workqueue layer sleeps when idle.  An explicit
# NUMBA_THREADING_LAYER wins; nothing changes once numba has launched its threads.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


class ThreadChooser:
    """Run a kernel on one thread or in parallel, whichever ran faster lately for the same key.

    The result is bit-identical either way (integer arithmetic), so only time is at stake.
    A parallel launch costs tens of microseconds, and much more when other processes hold the
    cores (the workers must be scheduled first: 30-150 us measured for an empty ``prange`` on
    the shared 2-core machine); small layers then finish sooner on the calling thread.  The first calls of a key
    alternate both modes, later calls take the faster one (exponential average of the wall
    time) and re-try the other every ``probe_every`` calls.
    """

    probe_every = 32

    def __init__(self) -> None:
        self._stats: dict[tuple, list[float]] = {}

    def run(self, key: tuple, threads: int, fn) -> None:
        """Call ``fn(n_threads)`` with ``n_threads`` 1 or ``threads``."""
        if threads <= 1:
            fn(1)
            return
        st = self._stats.setdefault(key, [float("inf"), float("inf"), 0.0])
        n = int(st[2])
        st[2] += 1
        if n < 4:
            mode = n % 2
        else:
            mode = 0 if st[0] <= st[1] else 1
            if n % self.probe_every == 0:
                mode = 1 - mode
        t = time.perf_counter()
        fn(threads if mode else 1)
        dt = time.perf_counter() - t
        st[mode] = dt if st[mode] == float("inf") else 0.7 * st[mode] + 0.3 * dt

    def choice(self, key: tuple) -> str | None:
        """``"serial"``, ``"parallel"`` or None (not measured yet) for ``key``."""
        st = self._stats.get(key)
        if st is None or st[2] < 4:
            return None
        return "serial" if st[0] <= st[1] else "parallel"


def set_threads(threads: int) -> int:
    """Set numba's thread count for this thread (clamped to ``[1, NUMBA_NUM_THREADS]``); returns it."""
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def numba_get_threads() -> int:
    """numba's current thread count for this thread (after the first call, a direct read: 0.1 us, not 0.8 us)."""
    if getattr(_numba_parallel, "_is_initialized", False):  # numba internals: fall back if they change
        read = getattr(_numba_parallel, "_get_num_threads", None)
        n = read() if read is not None else 0
        if n > 0:
            return n
    return numba.get_num_threads()


def chunks_for(rows: int, n_tiles: int, threads: int) -> int:
    """Output-channel chunks per row so that small images still give every thread work."""
    if rows >= 8 * threads:
        return 1
    return max(1, min(n_tiles, (8 * threads + rows - 1) // rows))


def thread_slot(obj: Any, name: str) -> dict[int, Any]:
    """``obj.__dict__[name]``, a dict keyed by thread ident: what one layer's forward hands to the next (packed
    input words, margins) stays with the thread running that batch, so batches may run side by side on
    worker threads (the landscape engine's ``batch_workers``). Read and write ``[threading.get_ident()]``."""
    return obj.__dict__.setdefault(name, {})


def tid() -> int:
    """The calling thread's ident (the key of :func:`thread_slot`)."""
    return threading.get_ident()
