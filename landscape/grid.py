"""Grid specifications and the order in which grid points are evaluated (numpy only).

The coarse-to-fine rule (shared by the compute side and the plots): a point index ``i`` of an axis
with ``n`` points lies on level ``s`` (a power of two) when ``i % s == 0`` or ``i == n - 1``. A
point of a grid lies on level ``s`` when each of its indices does. Points are evaluated level by
level, from the coarsest ``s`` (the largest power of two below ``max(n) - 1``, so the corners come
first) down to ``s = 1`` (every point), row-major within a level; so an interrupted surface already
holds a complete lower-resolution grid, and :func:`complete_level` finds the finest one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np


def parse_grid(spec: str | Sequence[float], name: str = "x") -> np.ndarray:
    """Parse ``"min:max:num"`` into an inclusive ``np.linspace`` (as in Li et al.'s ``--x=-1:1:51``).

    >>> parse_grid("-1:1:5").tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    if not isinstance(spec, str):
        arr = np.asarray(spec, dtype=np.float64).reshape(-1)
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ValueError(f"{name} coordinates must be a non-empty list of finite numbers")
        return arr
    parts = spec.strip().split(":")
    usage = f"grid spec {name}={spec!r} must be 'min:max:num', e.g. '-1:1:21'"
    if len(parts) != 3:
        raise ValueError(f"{usage} (got {len(parts)} field{'s' if len(parts) != 1 else ''})")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"{usage}: min and max must be numbers") from None
    try:
        num = int(parts[2])
    except ValueError:
        raise ValueError(f"{usage}: num must be a whole number of points") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{usage}: min and max must be finite")
    if num < 1:
        raise ValueError(f"{usage}: num must be at least 1")
    if hi < lo:
        raise ValueError(f"{usage}: min ({lo}) is larger than max ({hi})")
    if num == 1 and hi != lo:
        raise ValueError(f"{usage}: a single point needs min == max")
    if num > 1 and hi == lo:
        raise ValueError(f"{usage}: min == max ({lo}) would evaluate the same point {num} times; "
                         "use num 1 or a range")
    return np.linspace(lo, hi, num)


class TooMuchMemoryError(ValueError):
    """A request (from a flag: grid size, ``--top-k``, ...) that would not fit in the memory available."""


class GridTooLargeError(TooMuchMemoryError):
    """A grid whose arrays would not fit in the memory available."""


#: bytes held in memory per grid point while computing: four float64 values and the done flag as
#: arrays, plus the Python list of pending indices (a tuple of ints, ~120 bytes)
BYTES_PER_POINT = 160


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_grid_memory(shape: Sequence[int], available: int | None = None) -> int:
    """Refuse (:class:`GridTooLargeError`, one line with the numbers) a grid whose arrays would not fit in memory.

    Returns the estimate in bytes (:data:`BYTES_PER_POINT` per point).
    """
    points = math.prod(int(n) for n in shape)
    need = points * BYTES_PER_POINT
    have = available_memory() if available is None else available
    if need > have:
        dims = " x ".join(str(int(n)) for n in shape)
        raise GridTooLargeError(f"a {dims} grid ({points:,} points) needs about {need / 2**30:,.1f} GiB of memory for "
                          f"its arrays; {have / 2**30:,.1f} GiB are available: use fewer points")
    return need

def check_memory(flag: str, need: int, what: str, advice: str, available: int | None = None) -> int:
    """Refuse (:class:`TooMuchMemoryError`, one line with the estimate) what ``flag`` asks for when its
    ``need`` bytes (``what``: how it is made up) exceed the memory available; returns ``need``."""
    have = available_memory() if available is None else available
    if need > have:
        raise TooMuchMemoryError(f"{flag} needs about {need / 2**30:,.1f} GiB of memory for {what}; "
                                 f"{have / 2**30:,.1f} GiB are available: {advice}")
    return need


def grid_points(xcoordinates: np.ndarray, ycoordinates: np.ndarray | None) -> list[tuple[int, ...]]:
    """All grid indices in row-major order (``(i,)`` or ``(i, j)``)."""
    if ycoordinates is None:
        return [(i,) for i in range(len(xcoordinates))]
    return [(i, j) for i in range(len(xcoordinates)) for j in range(len(ycoordinates))]



def _top_level(shape: Sequence[int]) -> int:
    """The coarsest level: the largest power of two <= max(n) - 1 (1 for grids of 1-2 points)."""
    longest = max(int(n) for n in shape)
    return 1 << max(0, (longest - 1).bit_length() - 1) if longest > 1 else 1


def on_level(index: int, n: int, s: int) -> bool:
    """Whether axis index ``index`` (of ``n`` points) lies on level ``s``."""
    return index % s == 0 or index == n - 1


def level_indices(n: int, s: int) -> np.ndarray:
    """The indices of an axis of ``n`` points that lie on level ``s``."""
    return np.array([i for i in range(n) if on_level(i, n, s)], dtype=np.int64)


def coarse_to_fine(shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Every index of a grid of ``shape`` (1D or 2D), coarse levels first (see the module doc).

    >>> coarse_to_fine((5,))
    [(0,), (4,), (2,), (1,), (3,)]
    """
    shape = tuple(int(n) for n in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"grid shape must hold positive sizes, got {shape}")
    order: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    s = _top_level(shape)
    while s >= 1:
        axes = [level_indices(n, s) for n in shape]
        mesh = np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(shape), -1).T
        for idx in (tuple(int(v) for v in p) for p in mesh):
            if idx not in seen:
                seen.add(idx)
                order.append(idx)
        s //= 2
    return order


def complete_level(done: np.ndarray) -> int | None:
    """The finest level ``s`` whose points are all done (1 = the whole grid), or None if none is.

    Use with :func:`level_indices` to draw a partial surface at the resolution it has.
    """
    done = np.asarray(done, dtype=bool)
    s = 1
    top = _top_level(done.shape)
    while s <= top:
        sub = done[np.ix_(*[level_indices(n, s) for n in done.shape])]
        if sub.all():
            return s
        s *= 2
    return None
