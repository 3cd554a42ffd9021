"""Single-threaded worker threads for data-parallel CPU work.

Small convolutions and autograd ops scale poorly when every op shares out its work over an OpenMP team
(one barrier per op); cutting the *data* into independent parts, each run start to finish on a worker
whose torch calls are single-threaded, keeps every core busy without those barriers. A worker never
shares out work again (:func:`in_worker`): a worker waiting on its own pool would never return.
Results are combined in the order of the parts, so they do not depend on which worker ran which part
nor on how many workers there are.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["cpu_workers", "in_worker", "omp_set_num_threads", "run_ordered", "worker_pool"]

T = TypeVar("T")
R = TypeVar("R")

_LOCAL = threading.local()
_POOL: dict[tuple[int, int, str], ThreadPoolExecutor] = {}


@functools.cache
def omp_set_num_threads() -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of every OpenMP runtime loaded (it sets the CALLING thread's team size;
    ``torch.set_num_threads`` would change the whole process), or None when torch's cannot be found.

    All of them, torch's among them: a process often holds several copies (scikit-learn ships its own
    libgomp; picking one by name once picked that one, and torch's workers kept teams of two)."""
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "libgomp" in line or "libiomp" in line})
        fns = []
        for path in paths:
            fn = ctypes.CDLL(path).omp_set_num_threads
            fn.argtypes, fn.restype = [ctypes.c_int], None
            fns.append((path, fn))
    except (OSError, AttributeError):
        return None
    if not fns or not any(path.startswith(torch_lib) for path, _ in fns) and len(fns) > 1:
        return None  # several runtimes, none of them torch's: setting them would not reach torch

    def set_all(n: int) -> None:
        for _, fn in fns:
            fn(n)

    return set_all


def in_worker() -> bool:
    """Whether the calling thread is a worker of :func:`worker_pool`."""
    return getattr(_LOCAL, "worker", False)


def _single_threaded() -> None:
    _LOCAL.worker = True
    # ATen sets a thread's OpenMP team size once, at the thread's first torch call, to the process-wide
    # setting (torch.set_num_threads): make that call first, or it would undo the 1 set below
    torch.get_num_threads()
    fn = omp_set_num_threads()
    if fn is not None:
        fn(1)  # this worker's torch calls run on its own core, without an OpenMP team of its own


def cpu_workers() -> int:
    """How many workers data-parallel work should use here: torch's thread count, or 1 inside a worker or
    where the OpenMP runtime cannot be told to keep a worker's calls single-threaded."""
    if in_worker() or omp_set_num_threads() is None:
        return 1
    return max(1, torch.get_num_threads())


def worker_pool(workers: int, name: str = "landscape-worker") -> ThreadPoolExecutor:
    """A pool of ``workers`` threads whose torch calls are single-threaded (one per process, size and name:
    a job that promises bit-identical results, e.g. Hessian products, keeps threads of its own)."""
    key = (os.getpid(), workers, name)
    if key not in _POOL:
        _POOL[key] = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=_single_threaded)
    return _POOL[key]


def run_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None,
                name: str = "landscape-worker") -> list[R]:
    """``[fn(item) for item in items]``, the items shared out over ``workers`` single-threaded workers of the
    pool ``name`` (:func:`worker_pool`; default :func:`cpu_workers`; 1 runs them here, in order). The first
    exception is raised after every started item has finished."""
    items = list(items) if not isinstance(items, Sequence) else items
    workers = cpu_workers() if workers is None else workers
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    futures = [worker_pool(workers, name).submit(fn, item) for item in items]
    errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]
