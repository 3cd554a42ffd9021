"""Sharpness figures that do not depend on one random plane.

* :func:`epsilon_sharpness`: Keskar et al. (2017, "On Large-Batch Training ... Sharp Minima", Metric 2.1):
  the largest loss increase within a ball around the weights, found by a few projected-gradient ascent
  steps. The ball is filter-normalized (Li et al. 2018): every filter (slice along dim 0 of a
  weight with two or more dimensions) may move by at most ``epsilon`` times its own norm, so the
  figure does not change when a filter is rescaled before a normalization layer. 1-D tensors (biases,
  BN affine, PReLU slopes) stay fixed (``bias_bn="ignore"``, as the surfaces' default) or move within
  ``epsilon`` times their whole norm (``"filter"``). Reported as the absolute increase and Keskar's
  ``100 * (max loss - loss) / (1 + loss)``. It is a lower bound of the true maximum (the maximum of the
  losses actually evaluated), also for binary networks, where the ascent direction is the STE gradient.
* :func:`random_sharpness`: the mean loss increase ``L(theta + r d) - L(theta)`` over ``N`` random
  filter-normalized directions ``d`` (:func:`landscape.directions.random_direction`) at radius ``r``,
  with a Student-t confidence interval over the directions.

Both evaluate the true loss (model in eval mode) on fixed data, through :class:`landscape.curvature.hessian.Hessian`
(its ``loss`` and ``gradient``), so the same ``params=`` selection applies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..directions import random_direction
from .hessian import Hessian, LossFn, ParamSelector, shifted

_EPS = 1e-12


@dataclass
class EpsilonSharpness:
    """Keskar's epsilon-sharpness in a filter-normalized ball of radius ``epsilon``."""

    epsilon: float
    loss: float  # at the weights
    max_loss: float  # largest loss evaluated in the ball
    increase: float  # max_loss - loss
    keskar: float  # 100 * increase / (1 + loss)
    steps: int
    losses: list[float] = field(default_factory=list)  # loss after every ascent step
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RandomSharpness:
    """Mean loss increase over random filter-normalized directions at ``radius``, with a CI."""

    radius: float
    loss: float
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float
    directions: int
    increases: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _groups(params: list[tuple[str, nn.Parameter]], bias_bn: str) -> dict[str, tuple[Tensor, bool]]:
    """Per parameter: the per-filter radius scale (norm of each filter, or of the whole 1-D tensor) and
    whether it moves."""
    out = {}
    for name, p in params:
        w = p.detach().double().cpu()
        if w.dim() <= 1:
            out[name] = (w.norm().reshape(1), bias_bn == "filter")
        else:
            out[name] = (w.reshape(w.shape[0], -1).norm(dim=1), True)
    return out


def _project(delta: dict[str, Tensor], groups: Mapping[str, tuple[Tensor, bool]], epsilon: float) -> None:
    for name, d in delta.items():
        norms, moves = groups[name]
        if not moves:
            d.zero_()
            continue
        rows = d.reshape(norms.numel(), -1)
        dn = rows.norm(dim=1)
        limit = epsilon * norms
        factor = torch.where(dn > limit, limit / (dn + _EPS), torch.ones_like(dn))
        rows.mul_(factor[:, None])


def epsilon_sharpness(
    model: nn.Module,
    data: Any,
    *,
    epsilon: float = 1e-3,
    steps: int = 10,
    step_size: float = 0.5,
    params: ParamSelector = "all",
    bias_bn: str = "ignore",
    loss_fn: LossFn | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> EpsilonSharpness:
    """Keskar's epsilon-sharpness by ``steps`` projected normalized-gradient ascent steps (see module doc).

    Each step moves every filter by ``step_size * epsilon * ||filter||`` along its own gradient slice,
    then projects back into the ball. The start is a seeded random point on the ball's boundary scaled
    by 1/2 (so a zero gradient at the weights does not stall the ascent). The model is restored.
    """
    if epsilon <= 0 or steps < 1:
        raise ValueError(f"epsilon must be > 0 and steps >= 1, got {epsilon} and {steps}")
    if bias_bn not in ("ignore", "filter"):
        raise ValueError(f"bias_bn must be 'ignore' or 'filter', got {bias_bn!r}")
    t0 = time.perf_counter()
    h = Hessian(model, data, loss_fn=loss_fn, params=params, batch_size=batch_size)
    groups = _groups(h.selected, bias_bn)
    base = h.loss()
    g = torch.Generator().manual_seed(int(seed))
    delta = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in h.selected}
    for name, d in delta.items():  # half-way to the boundary, per filter
        norms, _ = groups[name]
        rows = d.reshape(norms.numel(), -1)
        rows.mul_((0.5 * epsilon * norms / (rows.norm(dim=1) + _EPS))[:, None])
    _project(delta, groups, epsilon)
    best = base
    losses = []
    for i in range(int(steps)):
        with shifted(model, delta):
            grad = h.gradient()
        off = 0
        for name, p in h.selected:
            gp = grad[off : off + p.numel()].view(p.shape)
            off += p.numel()
            norms, _ = groups[name]
            rows = gp.reshape(norms.numel(), -1)
            step = rows / (rows.norm(dim=1, keepdim=True) + _EPS) * (step_size * epsilon * norms)[:, None]
            delta[name].reshape(norms.numel(), -1).add_(step)
        _project(delta, groups, epsilon)
        with shifted(model, delta):
            value = h.loss()
        losses.append(value)
        best = max(best, value)
        if progress is not None:
            progress(i + 1)
    return EpsilonSharpness(
        epsilon=float(epsilon), loss=base, max_loss=best, increase=best - base,
        keskar=100.0 * (best - base) / (1.0 + base), steps=int(steps), losses=losses,
        seconds=time.perf_counter() - t0,
    )


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, dof))


def random_sharpness(
    model: nn.Module,
    data: Any,
    *,
    radius: float = 0.1,
    directions: int = 10,
    normalization: str = "filter",
    bias_bn: str = "ignore",
    params: ParamSelector = "all",
    loss_fn: LossFn | None = None,
    batch_size: int = 256,
    seed: int = 0,
    confidence: float = 0.95,
    progress: Callable[[int], None] | None = None,
) -> RandomSharpness:
    """Mean of ``L(theta + radius d_k) - L(theta)`` over ``directions`` seeded random directions ``d_k``.

    Directions are drawn and normalized like the surfaces' (``filter`` by default, 1-D tensors
    ignored), restricted to the selected parameters; the interval is ``mean +- t * std / sqrt(N)``.
    """
    if directions < 2:
        raise ValueError(f"directions must be >= 2 (for a confidence interval), got {directions}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    t0 = time.perf_counter()
    h = Hessian(model, data, loss_fn=loss_fn, params=params, batch_size=batch_size)
    chosen = set(h.names)
    base = h.loss()
    gen = torch.Generator().manual_seed(int(seed))
    increases = []
    for k in range(int(directions)):
        d = random_direction(model, gen, normalization=normalization, bias_bn=bias_bn)
        d = {n: t for n, t in d.items() if n in chosen}
        with shifted(model, d, radius):
            increases.append(h.loss() - base)
        if progress is not None:
            progress(k + 1)
    arr = np.asarray(increases)
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    half = _t_quantile(confidence, len(arr) - 1) * std / math.sqrt(len(arr))
    return RandomSharpness(
        radius=float(radius), loss=base, mean=mean, std=std, ci_low=mean - half, ci_high=mean + half,
        confidence=float(confidence), directions=len(arr), increases=[float(v) for v in arr],
        seconds=time.perf_counter() - t0,
    )
