"""Fake-quantized ``nn.Conv2d`` / ``nn.Linear`` (subclasses, so code that finds layers by type still does).

A quantized layer quantizes its *input* with Eq. 5 (``act_bits``) and its weight with Eq. 6
(``weight_bits``); the bias stays float.  ``export_quantized_weight()`` returns the integer codes
that the forward dequantizes, so an integer engine reproduces the fake-quant weight exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantizers import ActQuantizer, WeightQuantizer, dequantize, eq6_codes
from .spec import FLOAT_BITS


class _QuantMixin:
    """Shared attributes and methods of :class:`QuantConv2d` and :class:`QuantLinear`."""

    weight: nn.Parameter
    weight_bits: int
    act_bits: int
    quant_group: str
    weight_quantizer: WeightQuantizer
    act_quantizer: nn.Module

    def _adopt(self, float_module: nn.Module, weight_bits: int, act_bits: int, in_channels: int, *, group: str,
               weight_granularity: str, act_granularity: str, act_range: str) -> None:
        """Take over ``float_module``'s weight and bias (the same Parameters) and set up the quantizers."""
        self.weight = float_module.weight
        self.bias = float_module.bias
        self.weight_bits = int(weight_bits)
        self.act_bits = int(act_bits)
        self.quant_group = group
        self.weight_quantizer = WeightQuantizer(self.weight_bits, weight_granularity)
        self.act_quantizer = (
            ActQuantizer(self.act_bits, in_channels, granularity=act_granularity, mode=act_range)
            if self.act_bits < FLOAT_BITS else nn.Identity()
        )
        self.act_quantizer.to(float_module.weight.device)
        self.train(float_module.training)

    def quantized_weight(self) -> Tensor:
        """The weight the forward uses: Eq. 6 fake-quantized (straight-through gradient)."""
        return self.weight_quantizer(self.weight)

    @torch.no_grad()
    def export_quantized_weight(self) -> dict:
        """Integer weight codes: ``dict(q=uint8 [shape of weight], bits, scale=[C_out], offset=[C_out])``.

        ``bnext.quant.dequantize(q, scale, offset)`` (``q * scale + offset`` per output channel) equals
        :meth:`quantized_weight` exactly.
        """
        if self.weight_bits >= FLOAT_BITS:
            raise ValueError(f"{type(self).__name__} keeps a float weight (weight_bits={self.weight_bits}); "
                             "nothing to export")
        q, scale, offset = eq6_codes(self.weight, self.weight_bits, self.weight_quantizer.granularity)
        return {"q": q.to(torch.uint8), "bits": self.weight_bits, "scale": scale, "offset": offset}

    def dequantized_weight(self) -> Tensor:
        """Weight rebuilt from :meth:`export_quantized_weight` (for checks)."""
        e = self.export_quantized_weight()
        return dequantize(e["q"], e["scale"], e["offset"])

    def _quant_repr(self) -> str:
        return f"group={self.quant_group}, W/A={self.weight_bits}/{self.act_bits}"


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with Eq. 5 on its input and Eq. 6 on its weight."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_bits: int, act_bits: int, *, group: str = "",
                   weight_granularity: str = "tensor", act_granularity: str = "tensor",
                   act_range: str = "calibrated") -> QuantConv2d:
        """Wrap ``conv``: same hyper-parameters, the *same* weight and bias parameters."""
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"expected a plain nn.Conv2d, got {type(conv).__name__}")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                device=conv.weight.device, dtype=conv.weight.dtype)
        q._adopt(conv, weight_bits, act_bits, conv.in_channels, group=group, weight_granularity=weight_granularity,
                 act_granularity=act_granularity, act_range=act_range)
        return q

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.act_quantizer(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` with Eq. 5 on its input and Eq. 6 on its weight."""

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_bits: int, act_bits: int, *, group: str = "",
                   weight_granularity: str = "tensor", act_granularity: str = "tensor",
                   act_range: str = "calibrated") -> QuantLinear:
        """Wrap ``linear``: same shape, the *same* weight and bias parameters."""
        if type(linear) is not nn.Linear:
            raise TypeError(f"expected a plain nn.Linear, got {type(linear).__name__}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype)
        q._adopt(linear, weight_bits, act_bits, linear.in_features, group=group,
                 weight_granularity=weight_granularity, act_granularity=act_granularity, act_range=act_range)
        return q

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.act_quantizer(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


QUANT_LAYERS = (QuantConv2d, QuantLinear)
