"""Activation binarizers: sign in the forward pass, a straight-through estimator backward.

A binarizer is a small, named ``nn.Module`` (as in larq) whose forward is paper Eq. 1
(``+1`` for ``x >= 0``, ``-1`` otherwise; sign(0) = +1 because a packed kernel cannot
store 0) and whose backward is a surrogate gradient.  Layers take one as an argument.

Double backward: the backward passes are written with differentiable torch ops on the saved input
(no ``once_differentiable``), so ``torch.autograd.grad(..., create_graph=True)`` differentiates them
again. The second derivatives are those of the straight-through surrogate: ``sign`` replaced at the
current point by its Taylor model with the STE slope (``1[|x| <= clip]`` for :class:`SignSTE`, whose
slope is piecewise constant and so has curvature 0; ``max(0, 2 - 2|x|)`` with curvature
``-2 sign(x) 1[|x| < 1]`` for :class:`ApproxSign`). ``landscape.curvature.hessian`` uses this for the curvature
of binary networks (the true loss is piecewise constant in the latent weights).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sign(x: Tensor) -> Tensor:
    """Paper Eq. 1: ``+1`` where ``x >= 0``, ``-1`` elsewhere (never 0)."""
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


class _SignSTE(torch.autograd.Function):
    """sign forward; backward ``grad * 1[|x| <= clip]`` in differentiable ops (double backward: slope 0)."""

    @staticmethod
    def forward(ctx, x: Tensor, clip: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.clip = clip
        return sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.clip).to(grad.dtype), None


class _ApproxSign(torch.autograd.Function):
    """sign forward; backward ``grad * max(0, 2 - 2|x|)`` in differentiable ops (double backward works)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp(min=0.0)


class Binarizer(nn.Module):
    """Base class of activation binarizers (forward is always paper Eq. 1)."""

    #: name used in summaries and checkpoints
    kind: str = "binarizer"


class SignSTE(Binarizer):
    """Sign with the clipped straight-through estimator (paper Eq. 1-2).

    Backward: ``grad * 1[|x| <= clip]``.  ``clip=1.5`` is BNext's setting (section 5.1);
    ``clip=1.0`` is the hardtanh STE of BinaryNet (Hubara et al. 2016).
    """

    kind = "ste_sign"

    def __init__(self, clip: float = 1.5) -> None:
        super().__init__()
        if clip <= 0:
            raise ValueError(f"SignSTE clip must be > 0, got {clip}")
        self.clip = float(clip)

    def forward(self, x: Tensor) -> Tensor:
        return _SignSTE.apply(x, self.clip)

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


class ApproxSign(Binarizer):
    """Bi-Real Net's ApproxSign (Liu et al. 2018): sign forward, piecewise-polynomial backward.

    ``d/dx = 2 + 2x`` on ``[-1, 0)``, ``2 - 2x`` on ``[0, 1)``, ``0`` elsewhere.
    """

    kind = "approx_sign"

    def forward(self, x: Tensor) -> Tensor:
        return _ApproxSign.apply(x)


def make_binarizer(spec: str | Binarizer | None) -> Binarizer | None:
    """Build a binarizer from a name (``ste_sign``, ``ste_sign:1.0``, ``approx_sign``) or pass one through."""
    if spec is None or isinstance(spec, Binarizer):
        return spec
    name, _, arg = spec.partition(":")
    if name == "ste_sign":
        return SignSTE(float(arg) if arg else 1.5)
    if name == "approx_sign":
        return ApproxSign()
    raise ValueError(f"unknown binarizer {spec!r}; expected 'ste_sign[:clip]' or 'approx_sign'")
