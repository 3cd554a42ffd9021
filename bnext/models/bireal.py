"""Bi-Real Net 18 (Liu et al. 2018) and Real-to-Binary Net 18 (Martinez et al. 2020, paper Fig. 3b).

Both use one shortcut per binary 3x3 conv, four stages of four convs, and a real
downsample shortcut (2x2 avg pool -> 1x1 conv -> BN) where width or resolution changes.

- ``bireal18``: unit = sign (ApproxSign backward) -> binary conv (weights sign(W) times a
  detached per-channel mean|W|, gradient through clamp(W, -1, 1)) -> BN, + shortcut.
  Stem: 7x7 stride-2 conv + BN + max-pool, no ReLU.
- ``real2binary18``: unit = BN -> sign -> binary conv (no weight scale) -> data-driven
  rescale (a gate computed from the real-valued unit input: GAP -> FC C_in/8 -> ReLU ->
  FC C_out -> sigmoid) -> PReLU, + shortcut.  Stem: 7x7 conv + BN + ReLU + max-pool.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..nn import BinaryConv2d, SqueezeExpand
from .common import ClassifierHead, PooledProjection, resnet_stem, scaled
from .registry import register_model

STAGES = (64, 128, 256, 512)
CONVS_PER_STAGE = 4


class BiRealUnit(nn.Module):
    """One Bi-Real binary conv with its own identity (or projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = BinaryConv2d(
            cin, cout, 3, stride, act_binarizer="approx_sign", scale="mean_abs_detached", weight_clip=1.0
        )
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = PooledProjection(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x)) + self.shortcut(x)


class Real2BinaryUnit(nn.Module):
    """Real-to-Binary conv unit (paper Fig. 3b) with its own shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = BinaryConv2d(cin, cout, 3, stride, act_binarizer="approx_sign")
        self.rescale = SqueezeExpand(cin, cout, reduction=8)
        self.act = nn.PReLU(cout)
        self.shortcut = PooledProjection(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.norm(x)) * self.rescale(x)
        return self.act(y) + self.shortcut(x)


class BiRealStyleNet(nn.Module):
    def __init__(self, unit: type[nn.Module], stem_act: nn.Module | None, *, num_classes: int,
                 input_size: int, width: float) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in STAGES]
        self.stem = resnet_stem(widths[0], input_size, stem_act)
        units: list[nn.Module] = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            for j in range(CONVS_PER_STAGE):
                units.append(unit(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*units)
        self.head = ClassifierHead(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model
def bireal18(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0) -> nn.Module:
    """Bi-Real Net 18 (Liu et al. 2018)."""
    return BiRealStyleNet(BiRealUnit, None, num_classes=num_classes, input_size=input_size, width=width)


@register_model
def real2binary18(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0) -> nn.Module:
    """Real-to-Binary Net 18 (Martinez et al. 2020): Bi-Real plus the data-driven rescale gate."""
    return BiRealStyleNet(Real2BinaryUnit, nn.ReLU(inplace=True), num_classes=num_classes,
                          input_size=input_size, width=width)
