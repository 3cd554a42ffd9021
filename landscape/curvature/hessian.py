"""Curvature of the loss of any ``nn.Module``: Hessian-vector products, top eigenvalues, trace, density.

The BNext paper argues with pictures (Fig. 2) that its modules smooth the landscape; curvature gives
numbers that stand without a picture. :class:`Hessian` is the Hessian of the mean loss over a fixed
evaluation set (model in eval mode: BatchNorm uses its running statistics) with respect to a
selection of the parameters, used as an operator:

* :meth:`Hessian.hvp`: ``H v`` by double backward (``torch.autograd``: the gradient with
  ``create_graph``, then the gradient of ``<grad, v>``), summed over fixed parts of the data
  (:mod:`.products`) that run in parallel on single-threaded workers, so any subset size fits in memory;
  deterministic for fixed data, vectors and seeds, and the same for any number of workers. Each part's
  forward/first-backward graph is kept between products at the same weights (each further product is
  one second backward) within a memory budget; BatchNorm is evaluated as its eval-mode affine map;
* :meth:`Hessian.top_eigenvalues` / :meth:`Hessian.extremes`: Lanczos (:mod:`.lanczos`) with full
  reorthogonalization and a basis in the parameters' dtype (its size is checked against
  ``max_basis_bytes`` before the first product), stopped when the wanted Ritz values' recurrence residuals
  are below ``tol`` times the spectral scale (Golub & Van Loan, Sec. 10.1), then checked by their true
  residuals ``||H u - theta u||`` (one product each); deflated restarts find repeated eigenvalues;
* :meth:`Hessian.trace`: Hutchinson's estimator ``E[z^T H z]`` with Rademacher probes ``z``,
  returned with its standard error and the number of probes (PyHessian, Yao et al. 2020);
* :meth:`Hessian.density`: the eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al.
  2019; PyHessian's ``density``): Ritz values of Lanczos runs from Rademacher vectors, weighted by the
  squared first components of their eigenvectors, smoothed by Gaussians; :func:`plot_density`.

Binary networks: the loss of a sign-binarized network is piecewise constant in its latent weights, so
its true Hessian is zero almost everywhere. Differentiating the straight-through backward a second
time gives the Hessian of the surrogate that training follows: each ``sign`` replaced by its
straight-through linearization at the current point (value ``sign(x)``, slope the STE mask), which is
a smooth function, so the result is symmetric. The surrogate is what these numbers describe for binary
models; ``params=`` restricts the curvature to real-valued parameters (BN, PReLU, shifts, SE, stem,
head), where it is well defined: pass a predicate ``(name, parameter) -> bool``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lanczos import Eigenvalues, Extremes, basis_bytes, extreme_pairs, format_bytes, lanczos, top_eigenpairs
from .products import (
    DEFAULT_MAX_GRAPH_BYTES,
    PartProducts,
    auto_part_size,
    graph_bytes_per_sample,
    make_parts,
)

__all__ = ["Density", "Eigenvalues", "Extremes", "Hessian", "TraceEstimate", "lanczos", "mean_cross_entropy",
           "plot_density", "select_parameters", "shifted"]

#: the default limit of a Lanczos basis (a full ResNet-18, 11.7M parameters, at 50 float32 vectors: 2.2 GiB)
DEFAULT_MAX_BASIS_BYTES = 4 * 2**30
#: ``"all"``, a predicate ``(name, parameter) -> bool`` or a list of parameter names
ParamSelector = str | Callable[[str, nn.Parameter], bool] | Sequence[str]
LossFn = Callable[[Tensor, Tensor], Tensor]


def select_parameters(model: nn.Module, params: ParamSelector = "all") -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs the curvature is taken over, in ``named_parameters`` order."""
    named = list(model.named_parameters())
    if isinstance(params, str):
        if params != "all":
            raise ValueError(
                f"params={params!r}: landscape knows only 'all'; pass a predicate (name, parameter) -> bool "
                "or a list of names (the CLI's --params real builds one that drops the latent binary weights)"
            )
        chosen = named
    elif callable(params):
        chosen = [(n, p) for n, p in named if params(n, p)]
    else:
        wanted = list(params)
        known = dict(named)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise KeyError(f"unknown parameter name(s) {unknown[:5]}; the model has e.g. {list(known)[:5]}")
        chosen = [(n, known[n]) for n in wanted]
    if not chosen:
        raise ValueError("the parameter selection is empty: no parameter to take the curvature over")
    return chosen


def as_dataset(data: tuple[Tensor, Tensor] | Mapping[str, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` from a pair or from an evaluation mapping (its ``train`` split, else its only one)."""
    if isinstance(data, Mapping):
        if "train" in data:
            return data["train"]
        if len(data) != 1:
            raise ValueError(f"data has splits {sorted(data)}; pass one (inputs, targets) pair or a 'train' split")
        return next(iter(data.values()))
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ValueError("data must be an (inputs, targets) pair of tensors or a {split: (inputs, targets)} mapping")
    return data[0], data[1]


def mean_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """The default loss: mean cross-entropy (float32 at least), as the landscape surfaces use."""
    if outputs.dtype not in (torch.float32, torch.float64):
        outputs = outputs.float()
    return F.cross_entropy(outputs, targets)


# ----------------------------------------------------------------------------- results
@dataclass
class TraceEstimate:
    """Hutchinson's trace estimate: mean of ``z^T H z`` over ``probes`` Rademacher vectors.

    ``converged`` says whether the relative standard error ``stderr / |estimate|`` reached ``target``
    (None: a fixed number of probes was asked for) before the cap of ``max_probes`` probes was hit.
    """

    estimate: float
    stderr: float  # standard error of the mean (sample std / sqrt(probes))
    probes: int
    hvps: int
    seconds: float
    samples: list[float] = field(default_factory=list)
    target: float | None = None  # relative standard error aimed at
    max_probes: int = 0  # the cap
    converged: bool = True  # target reached (always True without a target)

    @property
    def rel_stderr(self) -> float:
        """``stderr / |estimate|`` (inf for a zero estimate)."""
        return self.stderr / abs(self.estimate) if self.estimate else math.inf

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Density:
    """Stochastic Lanczos quadrature: per run, Ritz ``nodes`` and ``weights`` (each run's weights sum to 1)."""

    nodes: np.ndarray  # (runs, m)
    weights: np.ndarray  # (runs, m)
    dim: int
    hvps: int
    seconds: float

    def curve(self, sigma: float | None = None, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """``(t, p(t))``: the density smoothed by Gaussians of width ``sigma`` (default 1% of the range).

        Each Gaussian integrates to 1 and each run's weights sum to 1, so ``p`` integrates to 1 (the grid
        reaches 6 ``sigma`` past the extreme nodes).
        """
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        scale = max(hi - lo, abs(hi), abs(lo), 1e-12)
        sigma = 0.01 * scale if sigma is None else float(sigma)
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        t = np.linspace(lo - 6 * sigma, hi + 6 * sigma, int(points))
        z = (t[None, None, :] - self.nodes[:, :, None]) / sigma
        kernels = np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
        p = (self.weights[:, :, None] * kernels).sum(axis=1).mean(axis=0)
        return t, p

    def trace(self) -> float:
        """The trace implied by the quadrature (``dim`` times the mean of the nodes)."""
        return float(self.dim * (self.weights * self.nodes).sum(axis=1).mean())

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes.tolist(), "weights": self.weights.tolist(), "dim": self.dim,
                "hvps": self.hvps, "seconds": self.seconds}


# ----------------------------------------------------------------------------- the operator
def _eval_batch_norm(m: nn.modules.batchnorm._BatchNorm) -> Callable[[Tensor], Tensor]:
    """``m``'s eval-mode forward written as ``x * scale + shift`` per channel (running statistics)."""

    def forward(x: Tensor) -> Tensor:
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        shift = -m.running_mean * scale
        if m.bias is not None:
            shift = shift + m.bias
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)

    return forward


class Hessian:
    """Hessian of the mean loss over ``data`` w.r.t. the selected parameters of ``model`` (eval mode).

    Args:
        model: any ``nn.Module``; it is put in eval mode while computing and restored after.
        data: ``(inputs, targets)`` or ``{split: (inputs, targets)}`` (the ``train`` split is used).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean (default cross-entropy).
        params: ``"all"``, a predicate ``(name, parameter) -> bool`` or a list of names.
        batch_size: samples per forward (the loss and every product are summed over batches).
        device: where the data go (default: the model's device).
        part_size: products are summed over parts of at most this many samples (each batch cut evenly),
            run in parallel on single-threaded workers (:mod:`.products`; the parts, hence the result,
            do not depend on the number of workers). ``"auto"`` (default): the largest power of two up to 32
            whose gradient graph fits 256 MiB, measured on two samples (32 for CIFAR-sized resnet18 x0.25,
            8 for BNext-T at 32x32); :attr:`part_size` says which.
        workers: workers for the parts (default :func:`landscape.threads.cpu_workers`: torch's threads).
        max_graph_bytes: kept graphs (saved tensors) above this are not kept: later parts are rebuilt for each
            product (default 1 GiB of saved tensors, about twice that resident; None: keep all).
        cache_graph: keep the forward and first-backward graph between products (saves a forward and a
            backward per product; default True, within ``max_graph_bytes``); rebuilt when weights change.
        basis_dtype: dtype of the Lanczos basis (default the parameters' dtype: float32 halves the memory
            of float64; projections are computed in float64 either way).
        max_basis_bytes: refuse (:class:`~.lanczos.BasisTooLargeError`) a Lanczos basis above this size
            before the first product (default 4 GiB; None: no limit). :meth:`basis_estimate` says the size.
        basis_dir: a basis above ``max_basis_bytes`` goes to a temporary file in this folder instead of
            being refused (:class:`~.lanczos.DiskBasis`).
    """

    def __init__(
        self,
        model: nn.Module,
        data: tuple[Tensor, Tensor] | Mapping[str, tuple[Tensor, Tensor]],
        *,
        loss_fn: LossFn | None = None,
        params: ParamSelector = "all",
        batch_size: int = 256,
        device: str | torch.device | None = None,
        cache_graph: bool | None = None,
        part_size: int | str = "auto",
        workers: int | None = None,
        max_graph_bytes: int | None = DEFAULT_MAX_GRAPH_BYTES,
        basis_dtype: torch.dtype | None = None,
        max_basis_bytes: int | None = DEFAULT_MAX_BASIS_BYTES,
        basis_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.loss_fn = loss_fn or mean_cross_entropy
        self.selected = select_parameters(model, params)
        self.names = [n for n, _ in self.selected]
        self.params = [p for _, p in self.selected]
        self.dim = sum(p.numel() for p in self.params)
        first = next(iter(model.parameters()))
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = self.params[0].dtype
        floating = self.dtype in (torch.float32, torch.float64)
        self.basis_dtype = basis_dtype or (self.dtype if floating else torch.float32)
        self.max_basis_bytes = max_basis_bytes
        self.basis_dir = basis_dir
        inputs, targets = as_dataset(data)
        if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
            raise ValueError(f"inputs ({inputs.shape[0]}) and targets ({targets.shape[0]}) must be non-empty and match")
        self.inputs = inputs.to(self.device)
        self.targets = targets.to(self.device)
        self.n = int(inputs.shape[0])
        self.batch_size = int(batch_size)
        self.hvp_count = 0
        # the forward and first backward do not depend on v: each part's graph is kept between products
        # (within max_graph_bytes) and rebuilt when a parameter or buffer changed in place
        self.cache_graph = True if cache_graph is None else bool(cache_graph)
        if part_size == "auto":  # a function of the model and the input shape only (deterministic)
            with self._prepared():
                per_sample = graph_bytes_per_sample(model, self.params, self.inputs, self.targets, self.loss_fn)
            part_size = auto_part_size(per_sample)
        elif not isinstance(part_size, int) or isinstance(part_size, bool) or part_size < 1:
            raise ValueError(f"part_size must be a positive integer or 'auto', got {part_size!r}")
        self.part_size = int(part_size)
        self.parts = make_parts(self.n, self.batch_size, self.part_size)
        self.products = PartProducts(model, self.params, self.inputs, self.targets, self.loss_fn, self.parts,
                                     keep=self.cache_graph, max_graph_bytes=max_graph_bytes, workers=workers)

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _prepared(self) -> Iterator[None]:
        """Eval mode, gradients only for the selected parameters, BatchNorm as its eval-mode affine map
        (same function, a cheaper double backward than the general batch-norm formula); all restored after."""
        modes = {m: m.training for m in self.model.modules()}
        flags = {p: p.requires_grad for p in self.model.parameters()}
        chosen = {id(p) for p in self.params}
        patched = []
        try:
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(id(p) in chosen)
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None \
                        and "forward" not in m.__dict__:
                    m.forward = _eval_batch_norm(m)
                    patched.append(m)
            yield
        finally:
            for m in patched:
                del m.forward
            for m, t in modes.items():
                m.train(t)
            for p, f in flags.items():
                p.requires_grad_(f)

    def _batches(self) -> Iterator[tuple[Tensor, Tensor, float]]:
        for s in range(0, self.n, self.batch_size):
            xb, yb = self.inputs[s : s + self.batch_size], self.targets[s : s + self.batch_size]
            yield xb, yb, xb.shape[0] / self.n

    def _split(self, flat: Tensor) -> list[Tensor]:
        flat = flat.to(device=self.device, dtype=self.dtype)
        out, off = [], 0
        for p in self.params:
            out.append(flat[off : off + p.numel()].view_as(p))
            off += p.numel()
        return out

    @staticmethod
    def _flat(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
        return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like)])

    # -- values -----------------------------------------------------------------------
    def loss(self) -> float:
        """The mean loss over the data (eval mode)."""
        total = 0.0
        with self._prepared(), torch.no_grad():
            for xb, yb, w in self._batches():
                total += float(self.loss_fn(self.model(xb), yb)) * w
        return total

    def gradient(self) -> Tensor:
        """The gradient of the mean loss, flat (float64, CPU)."""
        acc = None
        with self._prepared(), torch.enable_grad():
            for xb, yb, w in self._batches():
                loss = self.loss_fn(self.model(xb), yb) * w
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
                flat = self._flat(grads, self.params).detach()
                acc = flat if acc is None else acc + flat
        return self._result(acc)

    def _result(self, acc: Tensor | None) -> Tensor:
        if acc is None:
            return torch.zeros(self.dim, dtype=torch.float64)
        return acc.to("cpu", torch.float64)

    def hvp(self, v: Tensor) -> Tensor:
        """``H v`` for a flat vector ``v`` of length :attr:`dim` (returned flat, float64, on the CPU): the
        ordered sum of the parts' double backwards, run on the workers (:mod:`.products`)."""
        if v.numel() != self.dim:
            raise ValueError(f"vector has {v.numel()} entries, the selected parameters have {self.dim}")
        vs = self._split(v.reshape(-1))
        with self._prepared():
            acc = self.products.hvp(vs)
        self.hvp_count += 1
        return self._result(acc)

    @property
    def kept_parts(self) -> int:
        """How many parts' gradient graphs are kept between products (0 before the first product)."""
        return self.products.kept_parts

    def release(self) -> None:
        """Drop the kept gradient graphs (their activations) now."""
        self.products.release()

    def dense(self) -> Tensor:
        """The full ``dim x dim`` matrix from ``dim`` products (small models and tests only)."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return torch.stack([self.hvp(eye[i]) for i in range(self.dim)])

    # -- spectra ----------------------------------------------------------------------
    def _start(self, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(self.dim, generator=g, dtype=torch.float64)

    def _rademacher(self, g: torch.Generator) -> Tensor:
        return torch.randint(0, 2, (self.dim,), generator=g).to(torch.float64).mul_(2).sub_(1)

    def _basis_options(self) -> dict[str, Any]:
        return {"basis_dtype": self.basis_dtype, "max_bytes": self.max_basis_bytes, "basis_dir": self.basis_dir}

    def basis_estimate(self, iterations: int) -> str:
        """The Lanczos basis size for ``iterations`` products, for messages (dtype and limit included)."""
        need = basis_bytes(self.dim, iterations, self.basis_dtype)
        limit = "no limit" if self.max_basis_bytes is None else f"limit {format_bytes(self.max_basis_bytes)}"
        if self.basis_dir is not None and self.max_basis_bytes is not None and need > self.max_basis_bytes:
            limit += f", so on disk in {self.basis_dir}"
        return (f"Lanczos basis {iterations} x {self.dim:,} {str(self.basis_dtype).replace('torch.', '')} = "
                f"{format_bytes(need)} ({limit})")

    def top_eigenvalues(
        self,
        k: int = 1,
        *,
        tol: float | None = None,
        max_iter: int | None = None,
        seed: int = 0,
        which: str = "largest",
        return_vectors: bool = False,
        progress: Callable[[int], None] | None = None,
        starts: int = 2,
        max_starts: int | None = None,
    ) -> Eigenvalues:
        """The ``k`` largest (``which="largest"``, descending) or smallest (ascending) eigenvalues, converged,
        with true residuals and deflated restarts (:func:`~.lanczos.top_eigenpairs`; ``progress(products)``).

        ``tol`` (relative to the spectral scale) defaults to 1e-6 for float64 parameters and 1e-4 for
        float32 ones, whose products carry rounding of about 1e-5 relative: a true residual cannot go below it.
        """
        if tol is None:
            tol = 1e-6 if self.dtype == torch.float64 else 1e-4
        return top_eigenpairs(self.hvp, self._start, k, tol=tol, max_iter=max_iter, seed=seed, which=which,
                              return_vectors=return_vectors, progress=progress, starts=starts,
                              max_starts=max_starts, **self._basis_options())

    def extremes(self, *, tol: float = 1e-4, max_iter: int = 200, seed: int = 0) -> Extremes:
        """The largest and smallest eigenvalue, converged at both ends, with true residuals and flags
        (:func:`~.lanczos.extreme_pairs`); the eigenvalue map stores all of it per point."""
        return extreme_pairs(self.hvp, self._start(seed), tol=tol, max_iter=max_iter, **self._basis_options())

    def extreme_eigenvalues(self, iterations: int = 20, *, seed: int = 0) -> tuple[float, float]:
        """``(largest, smallest)`` Ritz values of one Lanczos run of exactly ``iterations`` products, with no
        residual and no convergence test (Li et al.'s map; kept for comparison). Use :meth:`extremes`."""
        theta, _, _, _ = lanczos(self.hvp, self._start(seed), min(int(iterations), self.dim),
                                 **self._basis_options())
        return float(theta[-1]), float(theta[0])

    def trace(
        self, probes: int = 100, *, seed: int = 0, progress: Callable[[int], None] | None = None,
        target: float | None = 0.05, min_probes: int = 10,
    ) -> TraceEstimate:
        """Hutchinson's estimate of ``tr H``: the mean of ``z^T H z`` over Rademacher ``z``, with its standard error.

        Probes are added until the relative standard error ``stderr / |mean|`` is at most ``target``
        (checked from ``min_probes`` probes on, so the error estimate itself is not one lucky draw) or
        ``probes`` (the cap) were used; ``converged`` says which. ``target=None`` uses exactly ``probes``.
        Avron & Toledo (2011) give the estimator; its variance is ``2 sum_{i!=j} H_ij^2`` for Rademacher ``z``.
        """
        if probes < 2:
            raise ValueError(f"probes must be >= 2 (for a standard error), got {probes}")
        if target is not None and not target > 0:
            raise ValueError(f"target (relative standard error) must be positive or None, got {target}")
        t0, h0 = time.perf_counter(), self.hvp_count
        g = torch.Generator().manual_seed(int(seed))
        first = max(2, min(int(min_probes), int(probes)))
        samples: list[float] = []
        converged = target is None

        def rel(arr: np.ndarray) -> float:
            m = abs(float(arr.mean()))
            return float(arr.std(ddof=1) / math.sqrt(len(arr))) / m if m > 0 else math.inf

        for i in range(int(probes)):
            z = self._rademacher(g)
            samples.append(float(z @ self.hvp(z)))
            if progress is not None:
                progress(i + 1)
            if target is not None and len(samples) >= first and rel(np.asarray(samples)) <= target:
                converged = True
                break
        arr = np.asarray(samples)
        return TraceEstimate(
            estimate=float(arr.mean()),
            stderr=float(arr.std(ddof=1) / math.sqrt(len(arr))),
            probes=len(arr),
            hvps=self.hvp_count - h0,
            seconds=time.perf_counter() - t0,
            samples=samples,
            target=target,
            max_probes=int(probes),
            converged=converged,
        )

    def density(
        self, iterations: int = 50, runs: int = 1, *, seed: int = 0, progress: Callable[[int], None] | None = None
    ) -> Density:
        """The eigenvalue density by stochastic Lanczos quadrature (``runs`` Rademacher starts, PyHessian)."""
        if runs < 1 or iterations < 1:
            raise ValueError(f"runs and iterations must be >= 1, got {runs} and {iterations}")
        t0, h0 = time.perf_counter(), self.hvp_count
        g = torch.Generator().manual_seed(int(seed))
        m = min(int(iterations), self.dim)
        nodes = np.zeros((runs, m))
        weights = np.zeros((runs, m))
        for r in range(int(runs)):
            theta, s, _, _ = lanczos(self.hvp, self._rademacher(g), m, **self._basis_options())
            # an early invariant subspace gives fewer nodes: pad with zero-weight copies
            nodes[r, : len(theta)] = theta
            nodes[r, len(theta) :] = theta[-1]
            weights[r, : len(theta)] = s[0, :] ** 2
            if progress is not None:
                progress(r + 1)
        weights /= weights.sum(axis=1, keepdims=True)
        return Density(nodes, weights, self.dim, self.hvp_count - h0, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- moving the model
@contextmanager
def shifted(model: nn.Module, step: Mapping[str, Tensor], scale: float = 1.0) -> Iterator[None]:
    """Temporarily add ``scale * step[name]`` to the named parameters/buffers (restored bitwise after)."""
    named = dict(model.named_parameters())
    named.update(dict(model.named_buffers()))
    missing = [n for n in step if n not in named]
    if missing:
        raise KeyError(f"direction entries {missing[:5]} are not parameters or buffers of the model")
    saved = {n: named[n].detach().clone() for n in step}
    try:
        with torch.no_grad():
            for n, d in step.items():
                t = named[n]
                t.copy_((t.double() + scale * d.to(t.device).double()).to(t.dtype))
        yield
    finally:
        with torch.no_grad():
            for n, t0 in saved.items():
                named[n].copy_(t0)


def plot_density(
    density: Density,
    out: str | os.PathLike[str],
    *,
    title: str = "Hessian eigenvalue density (stochastic Lanczos quadrature)",
    sigma: float | None = None,
    log: bool = True,
    formats: Sequence[str] | None = None,
    dpi: int | None = None,
) -> Path:
    """The smoothed density as PyHessian draws it (log density over eigenvalues), in the workbench style
    (:mod:`landscape.figures.style`); ``formats`` as in :func:`landscape.figures.style.save`. Returns the first file."""
    from ..figures import style

    t, p = density.curve(sigma)
    with style.context():
        fig = style.figure(figsize=(5.2, 3.4), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(t, np.maximum(p, 1e-30) if log else p, color="C0")
        if log:
            ax.set_yscale("log")
            ax.set_ylim(bottom=max(float(p.max()) * 1e-8, 1e-30))
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density (log scale)" if log else "density")
        ax.set_title(title)
        return style.save(fig, out, formats, style.DEFAULT_DPI if dpi is None else dpi)
