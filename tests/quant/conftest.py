"""Small models shared by the quantization tests (32x32 stem, narrow widths: fast on CPU)."""

from __future__ import annotations

import pytest
import torch

from bnext import models


def small(name: str, **options) -> torch.nn.Module:
    """``name`` at input 16, 10 classes, width 0.125 (resnet-style) or 0.25 (BNext-T/S/M/L)."""
    width = 0.125
    torch.manual_seed(0)
    return models.create(name, num_classes=10, input_size=16, width=width, **options)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
