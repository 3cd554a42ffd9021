"""Lanczos for a symmetric operator given only by its products, with a basis whose memory is known in advance.

* :func:`lanczos`: full reorthogonalization (classical Gram-Schmidt twice, Parlett's "twice is enough"),
  optionally deflated against ``locked`` vectors (a restart that looks only in their orthogonal
  complement, which is how repeated eigenvalues that one Krylov space cannot see are found);
* the basis is kept in ``basis_dtype`` (the model's dtype by default in :class:`~.hessian.Hessian`:
  a float32 basis costs half the memory of float64 and loses nothing the float32 products had not
  lost), and every projection is computed in float64 in chunks, so no float64 copy of the basis is
  ever made; :func:`basis_bytes` is the size, checked against a limit before the first product;
* :class:`DiskBasis`: the basis in an unnamed temporary file instead (``basis_dir``), read back chunk by
  chunk with ``pread`` (the page cache, not the process, holds it), for models whose basis exceeds the
  memory limit (BNext-T: 30.9M parameters, 6.2 GB at 50 float32 vectors);
* :func:`ritz_vectors`: the Ritz vectors ``S^T Q`` (float64), also chunked;
* :func:`clusters`: groups of (near-)equal eigenvalues within their error bounds;
* :func:`top_eigenpairs`: the ``k`` largest or smallest eigenvalues, converged, with true residuals
  ``||A u - theta u||`` (one product each, not the recurrence's ``beta_m |s_mi|``, which float rounding
  makes meaninglessly small) and deflated restarts that find repeated eigenvalues;
* :func:`extreme_pairs`: the largest and the smallest eigenvalue of one run converged at both ends.

Reference: Golub & Van Loan, *Matrix Computations*, 4th ed., Sec. 10.1 (Lanczos, Ritz pairs and their
residuals) and Sec. 10.3 (reorthogonalization); Parlett, *The Symmetric Eigenvalue Problem*, Ch. 11-13.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: bytes of float64 scratch per chunk when projecting against the basis (bounds the transient memory)
CHUNK_BYTES = 64 * 2**20


class BasisTooLargeError(ValueError):
    """The Lanczos basis would exceed the memory limit (the message gives the size and the ways out)."""


@dataclass
class Eigenvalues:
    """Eigenvalue estimates with their true residual norms ``||H u - theta u||`` (one product each).

    ``values`` are the Rayleigh quotients ``u^T H u`` of the unit Ritz vectors ``u``; ``residuals`` bound
    the error (some eigenvalue lies within ``r`` of each value: the residual bound of a symmetric
    operator, Parlett, *The Symmetric Eigenvalue Problem*, Ch. 4) and
    ``error_bounds`` are the sharper ``min(r, r^2 / gap)`` with the gap to the other Ritz values
    (an estimate: the gap to the true spectrum is not known). ``converged``: every true residual is
    below ``tol`` times the spectral scale and the last restart added no new value. ``starts``:
    Lanczos runs, each after the first deflated against the vectors found so far (it finds a repeated
    eigenvalue that one Krylov space cannot see); ``agreement``: the largest change, relative to the
    scale, the later starts made to the first start's values (0: they confirmed it); ``remaining``: the
    most extreme value found in the complement by the last start; ``clusters``: index groups of values
    equal within their bounds (a multiplicity).
    """

    values: list[float]
    residuals: list[float]
    iterations: int
    converged: bool
    hvps: int
    seconds: float
    vectors: Tensor | None = None  # (k, dim) Ritz vectors when asked for
    recurrence_residuals: list[float] = field(default_factory=list)  # beta_m |s_mi|: what Lanczos believed
    error_bounds: list[float] = field(default_factory=list)
    starts: int = 1
    agreement: float = 0.0
    remaining: float | None = None
    clusters: list[list[int]] = field(default_factory=list)
    scale: float = 0.0
    tol: float = 0.0
    basis_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "vectors"}


@dataclass
class Extremes:
    """The largest and smallest eigenvalue of one Lanczos run, each with its true residual, an error bound
    (``min(r, r^2 / gap)``, gap estimated from the other Ritz values) and a converged flag."""

    max: float
    min: float
    max_residual: float
    min_residual: float
    max_bound: float
    min_bound: float
    max_converged: bool
    min_converged: bool
    iterations: int
    hvps: int
    seconds: float
    tol: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def basis_bytes(dim: int, iterations: int, dtype: torch.dtype = torch.float64) -> int:
    """Bytes of a Lanczos basis of ``iterations`` vectors of length ``dim`` in ``dtype``."""
    return int(dim) * int(iterations) * torch.empty((), dtype=dtype).element_size()


def format_bytes(n: float) -> str:
    """``n`` bytes in GiB/MiB/KiB for messages."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def check_basis(dim: int, iterations: int, dtype: torch.dtype, limit: int | None,
                basis_dir: str | os.PathLike[str] | None = None) -> int:
    """The basis size in bytes, or :class:`BasisTooLargeError` when it exceeds ``limit`` (None: no limit) and
    cannot go to disk (no ``basis_dir``, or less free space there than the basis needs)."""
    need = basis_bytes(dim, iterations, dtype)
    if limit is None or need <= limit:
        return need
    shape = f"{iterations} vectors x {dim:,} parameters, {str(dtype).replace('torch.', '')}"
    ways = ("lower max_iter (--max-iter), select fewer parameters (--params real) or raise the limit "
            "(--max-basis-gb)")
    if basis_dir is None:
        raise BasisTooLargeError(
            f"the Lanczos basis would take {format_bytes(need)} ({shape}), above the limit of "
            f"{format_bytes(limit)}; keep it on disk (basis_dir=, CLI --basis-dir), {ways}")
    free = shutil.disk_usage(basis_dir).free
    if need > free:
        raise BasisTooLargeError(
            f"the Lanczos basis would take {format_bytes(need)} ({shape}), above the limit of "
            f"{format_bytes(limit)} in memory and the {format_bytes(free)} free in {basis_dir} (--basis-dir); {ways}")
    return need


class DiskBasis:
    """Rows of a Lanczos basis in an unnamed temporary file under ``folder`` (deleted when closed or collected).

    ``basis[j] = v`` writes row ``j``; ``basis[j]`` and :meth:`read` return tensors; ``basis[:n]`` is a view
    of the first ``n`` rows. Only the rows asked for are ever in memory.
    """

    def __init__(self, rows: int, dim: int, dtype: torch.dtype, folder: str | os.PathLike[str] | None = None,
                 _file: Any = None, _count: int | None = None):
        self.dim, self.dtype = int(dim), dtype
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        self._file = _file if _file is not None else tempfile.TemporaryFile(dir=folder)
        self.shape = (int(rows if _count is None else _count), self.dim)

    def _offset(self, row: int) -> int:
        return row * self.dim * self.itemsize

    def __setitem__(self, row: int, value: Tensor) -> None:
        data = value.detach().to("cpu", self.dtype).contiguous().reshape(-1).numpy().tobytes()
        os.pwrite(self._file.fileno(), data, self._offset(int(row)))

    def read(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` as a tensor (of the basis' dtype)."""
        stop = min(stop, self.shape[0])
        n = max(0, stop - start)
        buf = bytearray(n * self.dim * self.itemsize)
        view, done = memoryview(buf), 0
        while done < len(buf):
            got = os.preadv(self._file.fileno(), [view[done:]], self._offset(start) + done)
            if got <= 0:
                raise OSError(f"the Lanczos basis file ended early (row {start + done // (self.dim * self.itemsize)})")
            done += got
        return torch.frombuffer(buf, dtype=self.dtype).reshape(n, self.dim) if n else torch.empty(0, self.dim,
                                                                                                  dtype=self.dtype)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            if key.start not in (None, 0) or key.step not in (None, 1):
                raise IndexError("DiskBasis supports [:n] views only")
            n = self.shape[0] if key.stop is None else min(int(key.stop), self.shape[0])
            return DiskBasis(n, self.dim, self.dtype, _file=self._file, _count=n)
        return self.read(int(key), int(key) + 1)[0]


def _chunk(rows: Tensor | DiskBasis, start: int, stop: int) -> Tensor:
    return rows.read(start, stop) if isinstance(rows, DiskBasis) else rows[start:stop]


def _rows_per_chunk(dim: int) -> int:
    return max(1, CHUNK_BYTES // max(1, 8 * dim))


def project_out(w: Tensor, rows: Tensor | DiskBasis | None) -> Tensor:
    """``w - Q^T (Q w)`` for the rows ``Q`` (any dtype), computed in float64 chunk by chunk (``w`` float64)."""
    if rows is None or rows.shape[0] == 0:
        return w
    step = _rows_per_chunk(rows.shape[1])
    for i in range(0, rows.shape[0], step):  # one pass: each chunk is read once (a disk basis too)
        q = _chunk(rows, i, i + step).to(torch.float64)
        w = w - q.T @ (q @ w)
    return w


def ritz_vectors(basis: Tensor | DiskBasis, s: np.ndarray) -> Tensor:
    """``s.T @ basis`` in float64 (``s``: ``(m, k)`` eigenvector columns of the tridiagonal), chunked."""
    coef = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))
    out = torch.zeros(coef.shape[1], basis.shape[1], dtype=torch.float64)
    step = _rows_per_chunk(basis.shape[1])
    for i in range(0, coef.shape[0], step):
        out += coef[i : i + step].T @ _chunk(basis, i, i + step).to(torch.float64)
    return out


def ritz(alpha: Sequence[float], beta: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal (``beta`` off the diagonal)."""
    from scipy.linalg import eigh_tridiagonal

    d = np.asarray(alpha, dtype=np.float64)
    if len(d) == 1:
        return d.copy(), np.ones((1, 1))
    return eigh_tridiagonal(d, np.asarray(beta[: len(d) - 1], dtype=np.float64))


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    max_iter: int,
    *,
    stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None,
    keep_basis: bool = False,
    locked: Tensor | None = None,
    basis_dtype: torch.dtype = torch.float64,
    max_bytes: int | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, float, Tensor | DiskBasis | None]:
    """Lanczos with full reorthogonalization from ``v0``, in the orthogonal complement of ``locked``'s rows.

    Returns the tridiagonal's eigenvalues (ascending), its eigenvectors, the last ``beta`` (Ritz pair
    ``i``'s recurrence residual is ``beta * |S[-1, i]|``; the true one needs a product, see
    :meth:`~.hessian.Hessian.top_eigenvalues`) and the basis when asked. ``stop(theta, S, beta)`` is
    called after every step and ends the iteration when it returns True. The basis is allocated once
    (``max_iter`` rows of ``basis_dtype``) after :func:`check_basis` against ``max_bytes``; above it, in a
    :class:`DiskBasis` under ``basis_dir`` when one is given.
    """
    dim = v0.numel()
    m = max(1, min(int(max_iter), dim - (0 if locked is None else locked.shape[0])))
    check_basis(dim, m, basis_dtype, max_bytes, basis_dir)
    if basis_dir is not None and max_bytes is not None and basis_bytes(dim, m, basis_dtype) > max_bytes:
        basis: Tensor | DiskBasis = DiskBasis(m, dim, basis_dtype, basis_dir)
    else:
        basis = torch.empty(m, dim, dtype=basis_dtype)
    v = project_out(project_out(v0.to(torch.float64).reshape(-1), locked), locked)
    v = v / v.norm()
    alpha: list[float] = []
    beta: list[float] = []
    theta = s = None
    b = 0.0
    for j in range(m):
        basis[j] = v
        v = basis[j].to(torch.float64)  # the vector actually stored is the one the recurrence uses
        w = matvec(v).to(torch.float64).reshape(-1)
        a = float(w @ v)
        alpha.append(a)
        w = w - a * v
        if j > 0:
            w = w - beta[-1] * basis[j - 1].to(torch.float64)
        for _ in range(2):  # full reorthogonalization (and deflation), twice is enough (Parlett)
            w = project_out(project_out(w, basis[: j + 1]), locked)
        b = float(w.norm())
        theta, s = ritz(alpha, beta)
        scale = max(abs(theta[0]), abs(theta[-1]), 1e-30)
        if b <= 1e-12 * scale or j == m - 1:  # invariant subspace found, or budget spent
            break
        if stop is not None and stop(theta, s, b):
            break
        beta.append(b)
        v = w / b
    return theta, s, b, (basis[: len(alpha)] if keep_basis else None)


def clusters(values: Sequence[float], bounds: Sequence[float], scale: float, tol: float) -> list[list[int]]:
    """Index groups (size >= 2) of values that are equal within ``bound_i + bound_j + tol * scale``.

    ``values`` must be sorted (either order); a cluster is a run of neighbours that pairwise chain.
    """
    groups: list[list[int]] = []
    current = [0] if len(values) else []
    for i in range(1, len(values)):
        if abs(values[i] - values[i - 1]) <= bounds[i] + bounds[i - 1] + tol * scale:
            current.append(i)
        else:
            if len(current) > 1:
                groups.append(current)
            current = [i]
    if len(current) > 1:
        groups.append(current)
    return groups


def check_pairs(matvec: Callable[[Tensor], Tensor], vectors: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rayleigh quotients ``u^T A u`` and true residuals ``||A u - (u^T A u) u||`` of the (normalized) rows."""
    values, residuals = [], []
    for u in vectors:
        u = u / u.norm()
        au = matvec(u).to(torch.float64).reshape(-1)
        q = float(u @ au)
        values.append(q)
        residuals.append(float((au - q * u).norm()))
    return np.asarray(values), np.asarray(residuals)


def error_bounds(values: np.ndarray, residuals: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``min(r, r^2 / gap)``, the gap taken to the nearest other Ritz value of the run (an estimate)."""
    out = []
    for v, r in zip(values, residuals):
        others = np.abs(np.asarray(theta) - v)
        others = others[others > max(float(r), 1e-300)]
        gap = float(others.min()) if others.size else math.inf
        out.append(min(float(r), float(r) ** 2 / gap))
    return np.asarray(out)


class _Counted:
    """A matvec that counts its calls and reports them to ``progress``."""

    def __init__(self, matvec: Callable[[Tensor], Tensor], progress: Callable[[int], None] | None):
        self.matvec, self.progress, self.calls = matvec, progress, 0

    def __call__(self, v: Tensor) -> Tensor:
        out = self.matvec(v)
        if not bool(torch.isfinite(out).all()):
            raise ValueError(
                f"Hessian-vector product {self.calls + 1} is not finite (inf or NaN): the loss's curvature "
                "overflows at these weights (e.g. a freshly initialized model whose BatchNorm statistics were "
                "never estimated); expected a finite loss: use a trained checkpoint or recalibrate BatchNorm")
        self.calls += 1
        if self.progress is not None:
            self.progress(self.calls)
        return out


def top_eigenpairs(
    matvec: Callable[[Tensor], Tensor],
    start: Callable[[int], Tensor],
    k: int = 1,
    *,
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int = 0,
    which: str = "largest",
    return_vectors: bool = False,
    progress: Callable[[int], None] | None = None,
    starts: int = 2,
    max_starts: int | None = None,
    basis_dtype: torch.dtype = torch.float64,
    max_bytes: int | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
) -> Eigenvalues:
    """The ``k`` largest (descending) or smallest (ascending) eigenvalues of the operator ``matvec``.

    ``start(seed)`` gives a start vector (its length is the dimension). Each run stops when the wanted
    Ritz values' recurrence residuals are below ``tol`` times the largest Ritz value in magnitude, or
    after ``max_iter`` products (default ``min(dim, max(50, 10 k))``); then every reported pair's true
    residual is computed with one product. At least ``starts`` runs (seeds ``seed, seed + 1, ...``),
    each after the first deflated against the vectors of the current answer; while a start still
    changes the answer another follows, up to ``max_starts`` (default ``k + starts``).
    ``progress(products)`` after every product. See :class:`Eigenvalues`.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    dim = start(seed).numel()
    if not 1 <= k <= dim:
        raise ValueError(f"k must be between 1 and the number of parameters ({dim}), got {k}")
    if starts < 1 or tol <= 0:
        raise ValueError(f"starts must be >= 1 and tol > 0, got {starts} and {tol}")
    max_iter = min(dim, max(50, 10 * k)) if max_iter is None else min(int(max_iter), dim)
    max_iter = max(max_iter, k)
    max_starts = max(int(starts), k + int(starts) if max_starts is None else int(max_starts))
    check_basis(dim, max_iter, basis_dtype, max_bytes, basis_dir)
    t0 = time.perf_counter()
    op = _Counted(matvec, progress)
    sign = 1.0 if which == "largest" else -1.0
    found: list[tuple[float, float, float, float, Tensor]] = []  # value, residual, recurrence, bound, vector
    first: list[float] = []
    iterations, remaining, changed, run, scale = 0, None, False, 0, 1e-30

    def wanted(theta: np.ndarray) -> np.ndarray:
        idx = np.arange(len(theta))
        return idx[::-1][:k] if which == "largest" else idx[:k]

    for run in range(max_starts):
        locked = torch.stack([f[4] for f in found]) if found else None
        if locked is not None and locked.shape[0] >= dim:
            break
        threshold = sign * found[k - 1][0] if len(found) >= k else -math.inf

        def stop(theta: np.ndarray, s: np.ndarray, b: float, _thr: float = threshold, _sc: float = scale) -> bool:
            if len(theta) < k:
                return False
            sc = max(abs(theta[0]), abs(theta[-1]), _sc)
            idx = wanted(theta)
            # a restart only has to settle the values that could enter the answer (and its most extreme)
            idx = [i for n, i in enumerate(idx) if n == 0 or sign * theta[i] >= _thr - tol * sc]
            return bool(np.all(b * np.abs(s[-1, idx]) <= tol * sc))

        theta, s, b, basis = lanczos(op, start(seed + run), max_iter, stop=stop, keep_basis=True, locked=locked,
                                     basis_dtype=basis_dtype, max_bytes=max_bytes, basis_dir=basis_dir)
        iterations += len(theta)
        idx = wanted(theta)[: min(k, len(theta))]
        vectors = ritz_vectors(basis, s[:, idx])
        del basis
        values, residuals = check_pairs(op, vectors)
        recurrence = b * np.abs(s[-1, idx])
        bounds = error_bounds(values, residuals, theta)
        scale = max(scale, float(np.abs(theta).max()), float(np.abs(values).max()))
        remaining = float(values[0]) if run > 0 else None
        before = [f[0] for f in found]
        found.extend((float(v), float(r), float(c), float(e), u.to(basis_dtype))
                     for v, r, c, e, u in zip(values, residuals, recurrence, bounds, vectors))
        del vectors  # float64 (k x dim): only the basis-dtype copies in found are kept across starts
        found.sort(key=lambda f: -sign * f[0])
        del found[k:]  # only the answer's vectors are kept (and deflated against)
        after = [f[0] for f in found]
        if run == 0:
            first = after
        changed = run > 0 and (len(after) != len(before)
                               or max(abs(a - c) for a, c in zip(after, before)) > tol * scale)
        if run + 1 >= starts and not changed:
            break
    values = [f[0] for f in found]
    bounds = [f[3] for f in found]
    converged = (all(f[1] <= tol * scale for f in found) and not changed) or iterations >= dim
    return Eigenvalues(
        values=values,
        residuals=[f[1] for f in found],
        iterations=iterations,
        converged=bool(converged),
        hvps=op.calls,
        seconds=time.perf_counter() - t0,
        vectors=torch.stack([f[4].to(torch.float64) for f in found]) if return_vectors else None,
        recurrence_residuals=[f[2] for f in found],
        error_bounds=bounds,
        starts=run + 1,
        agreement=max(abs(a - c) for a, c in zip(values, first)) / scale if first else 0.0,
        remaining=remaining,
        clusters=clusters(values, bounds, scale, tol),
        scale=scale,
        tol=tol,
        basis_bytes=basis_bytes(dim, max_iter, basis_dtype),
    )


def extreme_pairs(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 200,
    basis_dtype: torch.dtype = torch.float64,
    max_bytes: int | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
) -> Extremes:
    """The largest and the smallest eigenvalue from one Lanczos run from ``v0`` converged at both ends.

    The run stops when both ends' recurrence residuals are below ``tol`` times the spectral scale (or
    after ``max_iter`` products); then each end's true residual is computed with one product and
    decides its ``converged`` flag (a run that exhausted the dimension is exact).
    """
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"tol must be > 0 and max_iter >= 1, got {tol} and {max_iter}")
    t0 = time.perf_counter()
    op = _Counted(matvec, None)
    dim = v0.numel()

    def stop(theta: np.ndarray, s: np.ndarray, b: float) -> bool:
        scale = max(abs(theta[0]), abs(theta[-1]), 1e-30)
        return bool(b * max(abs(s[-1, 0]), abs(s[-1, -1])) <= tol * scale)

    theta, s, b, basis = lanczos(op, v0, min(int(max_iter), dim), stop=stop, keep_basis=True,
                                 basis_dtype=basis_dtype, max_bytes=max_bytes, basis_dir=basis_dir)
    vectors = ritz_vectors(basis, s[:, [len(theta) - 1, 0]])
    del basis
    values, residuals = check_pairs(op, vectors)
    bounds = error_bounds(values, residuals, theta)
    scale = max(float(np.abs(theta).max()), float(np.abs(values).max()), 1e-30)
    ok = [bool(r <= tol * scale) or len(theta) >= dim for r in residuals]
    return Extremes(
        max=float(values[0]), min=float(values[1]), max_residual=float(residuals[0]),
        min_residual=float(residuals[1]), max_bound=float(bounds[0]), min_bound=float(bounds[1]),
        max_converged=ok[0], min_converged=ok[1], iterations=len(theta), hvps=op.calls,
        seconds=time.perf_counter() - t0, tol=tol,
    )
