"""Paper Eq. 5 (asymmetric activation quantizer) and Eq. 6 (weight quantizer), section 7.5.

Eq. 5, for a tensor ``X`` with range ``[beta, max]``::

    alpha = (2^n - 1) / (max - min),  beta = min,  X_q = round((X - beta) * alpha) / alpha + beta

Eq. 6, for the weight ``W`` of one layer: ``W`` is divided by its per-output-channel absolute
mean ``Norm(W)``, quantized with Eq. 5 (min/max of the scaled weight), and multiplied back by
``Norm(W)``.  Written with integer codes ``q`` in ``[0, 2^n - 1]``::

    W_q = q * scale + offset,  scale = Norm / alpha,  offset = beta * Norm   (per output channel)

which is the form :meth:`QuantConv2d.export_quantized_weight` exports and the forward uses.

Backward: straight-through, gradient 1 inside the clip range ``[min, max]`` and 0 outside (a
dynamic range contains every value; a calibrated one can clip).  The range is not learned.

Degenerate range (``max == min``): no division by zero; every code is 0 and the output is
``beta`` — the input itself for a dynamic range or a constant weight channel, the calibrated
constant for a calibrated range.  An all-zero weight channel (``Norm = 0``) stays zero.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .spec import ACT_RANGES, FLOAT_BITS, GRANULARITIES


def _levels(bits: int) -> int:
    return 2**bits - 1


def eq5_alpha(lo: Tensor, hi: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Eq. 5's ``alpha = (2^n - 1) / (max - min)`` and a mask of degenerate ranges (``max <= min``).

    Where the range is degenerate alpha is computed with a span of 1 (it multiplies zero there).
    """
    span = hi - lo
    degenerate = ~(span > 0)
    alpha = _levels(bits) / torch.where(degenerate, torch.ones_like(span), span)
    return alpha, degenerate


def eq5_codes(x: Tensor, lo: Tensor, hi: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Integer codes ``q = round((clamp(x) - beta) * alpha)`` in ``[0, 2^n - 1]`` (float dtype) and ``alpha``.

    ``lo``/``hi`` broadcast against ``x``; values outside ``[lo, hi]`` are clipped first.
    """
    alpha, degenerate = eq5_alpha(lo, hi, bits)
    q = torch.round((torch.clamp(x, lo, hi) - lo) * alpha).clamp_(0, _levels(bits))
    return torch.where(degenerate, torch.zeros_like(q), q), alpha


class _Eq5(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward((x >= lo) & (x <= hi))
        q, alpha = eq5_codes(x, lo, hi, bits)
        return q / alpha + lo

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None


def fake_quantize(x: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:
    """Eq. 5 with range ``[lo, hi]`` (broadcast against ``x``, not differentiated) and the clipped STE."""
    return _Eq5.apply(x, lo.detach().to(x.dtype), hi.detach().to(x.dtype), int(bits))


def tensor_range(x: Tensor, granularity: str = "tensor", channel_dim: int = 1) -> tuple[Tensor, Tensor]:
    """``(min, max)`` of ``x`` over everything (``tensor``: 0-d) or per ``channel_dim`` (``channel``: [C])."""
    if granularity == "tensor":
        return x.detach().amin(), x.detach().amax()
    if granularity != "channel":
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    dims = [d for d in range(x.dim()) if d != channel_dim % x.dim()]
    return x.detach().amin(dim=dims), x.detach().amax(dim=dims)


def _per_channel(v: Tensor, like: Tensor, dim: int = 0) -> Tensor:
    """Reshape a 0-d or [C] tensor to broadcast along ``dim`` of ``like``."""
    if v.dim() == 0:
        return v
    shape = [1] * like.dim()
    shape[dim] = -1
    return v.view(shape)


def abs_mean_norm(w: Tensor) -> Tensor:
    """Eq. 6's ``Norm(W)``: per-output-channel absolute mean, [C_out] (0 for an all-zero channel)."""
    return w.detach().abs().flatten(1).mean(dim=1)


@torch.no_grad()
def eq6_codes(w: Tensor, bits: int, granularity: str = "tensor") -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 6 as integer codes: ``(q, scale, offset)`` with ``W_q = q * scale + offset`` per output channel.

    ``q`` has the shape of ``w`` (float dtype, integer values in ``[0, 2^bits - 1]``); ``scale`` and
    ``offset`` are [C_out].  ``granularity`` picks where Eq. 5's min/max of the scaled weight is
    taken: over the whole layer (``tensor``, the paper) or per output channel (``channel``).
    """
    if w.dim() < 2:
        raise ValueError(f"Eq. 6 expects a weight with an output-channel dimension, got shape {tuple(w.shape)}")
    norm = abs_mean_norm(w)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))  # an all-zero channel is rescaled by 0
    scaled = w.detach() / _per_channel(safe, w)
    lo, hi = tensor_range(scaled, granularity, channel_dim=0)
    q, _ = eq5_codes(scaled, _per_channel(lo, w), _per_channel(hi, w), bits)
    alpha, _ = eq5_alpha(lo, hi, bits)  # 0-d (tensor) or [C_out] (channel)
    scale = (norm / alpha).contiguous()
    offset = (lo * norm).contiguous()
    return q, scale, offset


def dequantize(q: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """``q * scale + offset`` with [C_out] ``scale``/``offset`` along dim 0 (float32 multiply, then add).

    This is *the* dequantization: the fake-quant forward and any integer engine use it.
    """
    return q.to(scale.dtype) * _per_channel(scale, q) + _per_channel(offset, q)


class _Eq6(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, bits: int, granularity: str) -> Tensor:  # type: ignore[override]
        return dequantize(*eq6_codes(w, bits, granularity))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return grad, None, None  # every weight lies inside its own [min, max]


def fake_quantize_weight(w: Tensor, bits: int, granularity: str = "tensor") -> Tensor:
    """Eq. 6 in the forward pass, identity (straight-through) gradient to the float weight."""
    return _Eq6.apply(w, int(bits), granularity)


class WeightQuantizer(nn.Module):
    """Eq. 6 weight quantizer (stateless: codes are recomputed from the float weight)."""

    def __init__(self, bits: int, granularity: str = "tensor") -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"weight granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.bits = int(bits)
        self.granularity = granularity

    def forward(self, w: Tensor) -> Tensor:
        return w if self.bits >= FLOAT_BITS else fake_quantize_weight(w, self.bits, self.granularity)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, granularity={self.granularity!r}"


class ActQuantizer(nn.Module):
    """Eq. 5 activation quantizer for a layer input, with per-tensor or per-channel (dim 1) ranges.

    Range modes:
        ``dynamic``: min/max of the current batch (Eq. 5 as written; an output depends on
            the other samples of its batch).
        ``calibrated`` (default): buffers ``min_val``/``max_val``.  :func:`bnext.quant.calibrate`
            sets them to the min/max seen on calibration batches; in training mode the layer
            uses the batch's range and updates the buffers by a running average (``momentum``),
            like batch norm; in eval mode it uses the buffers (values outside are clipped).  An
            uncalibrated quantizer in eval mode warns and uses the batch's range.
    """

    def __init__(self, bits: int, channels: int | None = None, *, granularity: str = "tensor",
                 mode: str = "calibrated", momentum: float = 0.1) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"activation granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if mode not in ACT_RANGES:
            raise ValueError(f"activation range must be one of {ACT_RANGES}, got {mode!r}")
        if granularity == "channel" and not channels:
            raise ValueError("per-channel activation quantization needs the channel count")
        self.bits = int(bits)
        self.granularity = granularity
        self.mode = mode
        self.momentum = float(momentum)
        self.observing = False
        shape = (channels,) if granularity == "channel" else ()
        self.register_buffer("min_val", torch.full(shape, float("inf")))
        self.register_buffer("max_val", torch.full(shape, float("-inf")))

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.min_val).all() and torch.isfinite(self.max_val).all())

    def reset(self) -> None:
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))

    @torch.no_grad()
    def _observe(self, lo: Tensor, hi: Tensor) -> None:
        if self.observing:  # calibration: the full range of every batch seen
            torch.minimum(self.min_val, lo, out=self.min_val)
            torch.maximum(self.max_val, hi, out=self.max_val)
        elif not self.calibrated:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        else:
            self.min_val.lerp_(lo, self.momentum)
            self.max_val.lerp_(hi, self.momentum)

    def _broadcast(self, v: Tensor, x: Tensor) -> Tensor:
        return _per_channel(v, x, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits >= FLOAT_BITS:
            return x
        if self.mode == "dynamic" or self.training or self.observing:
            lo, hi = tensor_range(x, self.granularity, channel_dim=1)
            if self.mode == "calibrated":
                self._observe(lo, hi)
            if self.observing:
                return x
        elif not self.calibrated:
            warnings.warn(
                "ActQuantizer has no calibrated range and falls back to the batch's min/max (range=dynamic); "
                "run bnext.quant.calibrate(model, batches) (or fine-tune) before evaluating", stacklevel=2
            )
            lo, hi = tensor_range(x, self.granularity, channel_dim=1)
        else:
            lo, hi = self.min_val, self.max_val
        return fake_quantize(x, self._broadcast(lo, x), self._broadcast(hi, x), self.bits)

    def export(self) -> dict:
        """Eq. 5 parameters of the calibrated range: ``bits``, ``alpha``, ``beta`` (tensors, 0-d or [C])."""
        if not self.calibrated:
            raise RuntimeError("ActQuantizer is not calibrated; run bnext.quant.calibrate first")
        alpha, _ = eq5_alpha(self.min_val, self.max_val, self.bits)
        return {"bits": self.bits, "alpha": alpha.clone(), "beta": self.min_val.clone()}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, granularity={self.granularity!r}, mode={self.mode!r}"
