"""Smoothness metrics of a stored surface, from the grid alone (no model needed).

Definitions (all on one value array ``f``, e.g. ``train_loss``, NaN entries skipped):

* **roughness** = mean over interior points of ``|discrete Laplacian of f|`` in grid-index units
  (``f[i+1,j] + f[i-1,j] + f[i,j+1] + f[i,j-1] - 4 f[i,j]``; 1D: ``f[i+1] + f[i-1] - 2 f[i]``),
  divided by the loss range ``max f - min f``. Dimensionless; 0 for a plane, larger for bumpy or
  staircase surfaces. Compare surfaces computed on the same grid.
* **convexity share** (Li et al. 2018, Sec. 6 convexity maps, from the grid's own finite-
  difference Hessian instead of Hessian-vector products): at each interior point the 2x2 Hessian
  ``[[f_xx, f_xy], [f_xy, f_yy]]`` from central differences in coordinate units, eigenvalues
  ``l_min <= l_max``. A point is *non-convex* when ``l_max <= 0 < |l_min|`` or
  ``l_min / l_max < -0.1`` (``RATIO_THRESHOLD``), i.e. significant negative curvature relative to
  the positive one; flat points (both eigenvalues ~0, e.g. staircase plateaus of sign-binarized
  weights) count as convex. ``convexity_share`` is the convex fraction. 1D: ``f_xx >= 0``.
  For pure sign weights the surface is piecewise constant, so this describes the grid-scale shape,
  which is the meaningful one (Hessians of the staircase are zero almost everywhere).
* **basin width**: threshold ``f(centre) + delta`` (``delta`` in loss units, default 0.5); the
  basin is the 4-connected region around the grid point nearest the origin with ``f <= threshold``.
  ``basin_width_x`` / ``basin_width_y``: extent of the basin along the axes through the centre,
  with linear interpolation of the crossings (coordinate units, i.e. multiples of the direction);
  ``basin_area`` (coordinate units^2) and ``basin_diameter = 2 sqrt(area / pi)``;
  ``basin_truncated`` is true when the basin reaches the edge of the grid (widths are lower bounds).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

from .store import Surface, read_surface, write_metrics

RATIO_THRESHOLD = -0.1
DEFAULT_DELTA = 0.5


def laplacian(f: np.ndarray) -> np.ndarray:
    """Discrete Laplacian (grid-index units) at interior points; NaN where the stencil has NaN."""
    f = np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        return f[2:] + f[:-2] - 2 * f[1:-1]
    return f[2:, 1:-1] + f[:-2, 1:-1] + f[1:-1, 2:] + f[1:-1, :-2] - 4 * f[1:-1, 1:-1]


def roughness(f: np.ndarray) -> float:
    """Mean ``|Laplacian|`` over interior points divided by the value range (NaN if undefined)."""
    f = np.asarray(f, dtype=np.float64)
    if min(f.shape) < 3:
        return float("nan")
    lap = laplacian(f)
    lap = lap[np.isfinite(lap)]
    finite = f[np.isfinite(f)]
    if lap.size == 0 or finite.size == 0:
        return float("nan")
    span = float(finite.max() - finite.min())
    return 0.0 if span == 0 else float(np.abs(lap).mean() / span)


def hessian_eigenvalues(
    f: np.ndarray, x: np.ndarray, y: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(l_min, l_max)`` of the finite-difference Hessian at interior points.

    Central differences in coordinate units; for 1D both arrays are ``f_xx``.
    """
    f = np.asarray(f, dtype=np.float64)
    hx = np.diff(np.asarray(x, dtype=np.float64))
    if f.ndim == 1:
        h1, h2 = hx[:-1], hx[1:]
        fxx = 2 * (h1 * f[2:] - (h1 + h2) * f[1:-1] + h2 * f[:-2]) / (h1 * h2 * (h1 + h2))
        return fxx, fxx
    hy = np.diff(np.asarray(y, dtype=np.float64))
    a1, a2 = hx[:-1, None], hx[1:, None]
    b1, b2 = hy[None, :-1], hy[None, 1:]
    c = f[1:-1, 1:-1]
    fxx = 2 * (a1 * f[2:, 1:-1] - (a1 + a2) * c + a2 * f[:-2, 1:-1]) / (a1 * a2 * (a1 + a2))
    fyy = 2 * (b1 * f[1:-1, 2:] - (b1 + b2) * c + b2 * f[1:-1, :-2]) / (b1 * b2 * (b1 + b2))
    fxy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / ((a1 + a2) * (b1 + b2))
    mean = (fxx + fyy) / 2
    rad = np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    return mean - rad, mean + rad


def convexity_map(f: np.ndarray, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(convex, finite)`` boolean maps over interior points (see the module docstring)."""
    lmin, lmax = hessian_eigenvalues(f, x, y)
    finite = np.isfinite(lmin) & np.isfinite(lmax)
    scale = np.nanmax(np.abs(np.where(finite, lmax, np.nan))) if finite.any() else 0.0
    tiny = 1e-9 * (scale if np.isfinite(scale) and scale > 0 else 1.0)
    if np.asarray(f).ndim == 1:
        convex = lmax >= -tiny
    else:
        flat = (np.abs(lmin) <= tiny) & (np.abs(lmax) <= tiny)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = lmin / lmax
        convex = flat | ((lmax > tiny) & (ratio >= RATIO_THRESHOLD))
    return np.where(finite, convex, False), finite


def convexity_share(f: np.ndarray, x: np.ndarray, y: np.ndarray | None = None) -> float:
    """Fraction of interior grid points that are convex (NaN if no interior point is finite)."""
    if min(np.asarray(f).shape) < 3:
        return float("nan")
    convex, finite = convexity_map(f, x, y)
    return float(convex[finite].mean()) if finite.any() else float("nan")


def _crossing(coords: np.ndarray, vals: np.ndarray, centre: int, thr: float, step: int) -> tuple[float, bool]:
    """Coordinate where the profile first exceeds ``thr`` walking from ``centre`` by ``step``."""
    i = centre
    while 0 <= i + step < len(vals):
        nxt = i + step
        if not np.isfinite(vals[nxt]) or vals[nxt] > thr:
            if not np.isfinite(vals[nxt]):
                return float(coords[i]), True
            t = (thr - vals[i]) / (vals[nxt] - vals[i]) if vals[nxt] != vals[i] else 0.0
            return float(coords[i] + t * (coords[nxt] - coords[i])), False
        i = nxt
    return float(coords[i]), True


def basin(
    f: np.ndarray, x: np.ndarray, y: np.ndarray | None = None, *, delta: float = DEFAULT_DELTA
) -> dict[str, Any]:
    """Basin around the grid point nearest the origin where ``f <= f(centre) + delta``."""
    f = np.asarray(f, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    ci = int(np.argmin(np.abs(x)))
    cj = int(np.argmin(np.abs(y))) if y is not None else None
    centre_val = f[ci] if y is None else f[ci, cj]
    out: dict[str, Any] = {"basin_delta": float(delta), "basin_centre_value": float(centre_val)}
    if not np.isfinite(centre_val):
        return {**out, "basin_threshold": float("nan"), "basin_width_x": float("nan")}
    thr = float(centre_val + delta)
    out["basin_threshold"] = thr
    prof_x = f if y is None else f[:, cj]
    lo, t1 = _crossing(x, prof_x, ci, thr, -1)
    hi, t2 = _crossing(x, prof_x, ci, thr, +1)
    out["basin_width_x"] = hi - lo
    truncated = t1 or t2
    if y is None:
        out["basin_truncated"] = bool(truncated)
        return out
    y = np.asarray(y, dtype=np.float64)
    lo, t3 = _crossing(y, f[ci, :], cj, thr, -1)
    hi, t4 = _crossing(y, f[ci, :], cj, thr, +1)
    out["basin_width_y"] = hi - lo
    inside = np.isfinite(f) & (f <= thr)
    seen = np.zeros_like(inside)
    queue = deque([(ci, cj)])
    seen[ci, cj] = True
    while queue:
        i, j = queue.popleft()
        for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if 0 <= a < f.shape[0] and 0 <= b < f.shape[1] and inside[a, b] and not seen[a, b]:
                seen[a, b] = True
                queue.append((a, b))
    # cell areas from half-way points between coordinates
    ex, ey = _cell_widths(x), _cell_widths(y)
    area = float((np.outer(ex, ey) * seen).sum())
    edge = seen[0, :].any() or seen[-1, :].any() or seen[:, 0].any() or seen[:, -1].any()
    out.update(
        {
            "basin_area": area,
            "basin_diameter": float(2 * np.sqrt(area / np.pi)),
            "basin_truncated": bool(truncated or t3 or t4 or edge),
        }
    )
    return out


def _cell_widths(c: np.ndarray) -> np.ndarray:
    if len(c) == 1:
        return np.ones(1)
    mids = (c[1:] + c[:-1]) / 2
    edges = np.concatenate([[c[0]], mids, [c[-1]]])
    return np.diff(edges)


def surface_metrics(
    surface: Surface, key: str = "train_loss", *, delta: float = DEFAULT_DELTA
) -> dict[str, Any]:
    """All metrics of one value array of a surface."""
    if key not in surface.values:
        raise KeyError(f"{surface.path}: no value {key!r}; available: {surface.available()}")
    f = surface.values[key]
    x, y = surface.xcoordinates, surface.ycoordinates
    finite = f[np.isfinite(f)]
    out: dict[str, Any] = {
        "value": key,
        "points": int(f.size),
        "computed": int(np.isfinite(f).sum()),
        "min": float(finite.min()) if finite.size else float("nan"),
        "max": float(finite.max()) if finite.size else float("nan"),
        "roughness": roughness(f),
        "convexity_share": convexity_share(f, x, y),
        "convexity_ratio_threshold": RATIO_THRESHOLD,
    }
    out.update(basin(f, x, y, delta=delta))
    return out


def compute_and_store(
    path: str | os.PathLike[str], keys: list[str] | None = None, *, delta: float = DEFAULT_DELTA
) -> dict[str, dict[str, Any]]:
    """Compute metrics for the loss arrays of a surface file and write them back as attributes."""
    surface = read_surface(path)
    keys = keys or [k for k in ("train_loss", "test_loss") if k in surface.available()]
    result = {}
    for key in keys:
        result[key] = surface_metrics(surface, key, delta=delta)
        write_metrics(path, key, result[key])
    return result
