"""Helpers for the packed-engine tests: zoo models with non-trivial, fully binarized weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnext.models import create
from bnext.nn import BinaryConv2d, set_tau


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random latent weights, BN statistics/affine, shifts, PReLU slopes and mix weights; tau at sign."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.25)
            m.weight.copy_(torch.randn(c, generator=g) * 0.5 + 1.0)
            m.bias.copy_(torch.randn(c, generator=g) * 0.3)
        elif isinstance(m, BinaryConv2d):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)
            if m.shift is not None:
                m.shift.copy_(torch.randn(m.shift.shape, generator=g) * 0.3)
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    for name, p in model.named_parameters():
        if name.endswith("mix_weight"):
            p.copy_(torch.rand(p.shape, generator=g))
    set_tau(model, 0.0)
    return model.eval()


def make_model(name: str, input_size: int = 32, width: float = 0.25, num_classes: int = 10, seed: int = 0,
               **options) -> nn.Module:
    return randomize(create(name, num_classes=num_classes, input_size=input_size, width=width, **options), seed)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


@pytest.fixture
def tiny_bnext18() -> nn.Module:
    return make_model("bnext18", 32, 0.2)
