"""ResNet-18 family: the full-precision reference, BinaryNet-18 and XNOR-Net-18.

All three share the ResNet-18 layout (stages 64/128/256/512, two basic blocks each,
stride 2 in the first block of stages 2-4) and differ in the block's convolutions:

- ``resnet18``: real 3x3 convs, ReLU (He et al. 2016).
- ``binarynet18``: the residual-block 3x3 convs binarized directly (sign activations with
  the hardtanh STE, sign weights, no scaling), BN after each, hardtanh activations; one
  shortcut per two convs as in the float ResNet (paper Fig. 1b/2b "BinaryNet-18").
- ``xnornet18``: each conv is the XNOR-Net module of paper Fig. 3a,
  BN -> sign -> binary conv scaled per output channel by alpha = mean|W| -> ReLU.

Stem, downsample (1x1 conv + BN) and classifier stay real-valued.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..nn import BinaryConv2d
from .common import ClassifierHead, resnet_stem, scaled
from .registry import register_model

STAGES = (64, 128, 256, 512)

ConvFactory = Callable[[int, int, int], nn.Module]


def _real_conv(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _binarynet_conv(cin: int, cout: int, stride: int) -> nn.Module:
    return BinaryConv2d(cin, cout, 3, stride, act_binarizer="ste_sign:1.0")


def _xnor_conv(cin: int, cout: int, stride: int) -> nn.Module:
    # XNOR-Net module (Fig. 3a): BN -> sign -> binary conv * alpha
    return nn.Sequential(
        nn.BatchNorm2d(cin),
        BinaryConv2d(cin, cout, 3, stride, act_binarizer="ste_sign:1.0", scale="mean_abs"),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: conv -> BN -> act -> conv -> BN, + shortcut, act.

    ``post_bn=False`` drops the BNs after the convs (XNOR-Net normalizes *before* sign).
    """

    def __init__(
        self, cin: int, cout: int, stride: int, conv: ConvFactory, act: Callable[[], nn.Module],
        post_bn: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = conv(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout) if post_bn else nn.Identity()
        self.act1 = act()
        self.conv2 = conv(cout, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout) if post_bn else nn.Identity()
        self.act2 = act()
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 skeleton with a pluggable block convolution."""

    def __init__(
        self,
        conv: ConvFactory,
        act: Callable[[], nn.Module],
        *,
        num_classes: int,
        input_size: int,
        width: float = 1.0,
        post_bn: bool = True,
    ) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in STAGES]
        self.stem = resnet_stem(widths[0], input_size, act())
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, conv, act, post_bn))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model
def resnet18(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0) -> nn.Module:
    """Full-precision ResNet-18 (He et al. 2016), the reference of paper Fig. 1b/2a."""
    return ResNet18(_real_conv, lambda: nn.ReLU(inplace=True), num_classes=num_classes,
                    input_size=input_size, width=width)


@register_model
def binarynet18(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0) -> nn.Module:
    """BinaryNet-18: ResNet-18 with its block convs binarized directly (paper Fig. 2b)."""
    return ResNet18(_binarynet_conv, nn.Hardtanh, num_classes=num_classes, input_size=input_size, width=width)


@register_model
def xnornet18(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0) -> nn.Module:
    """XNOR-Net-18: ResNet-18 built from XNOR-Net modules (paper Fig. 3a)."""
    return ResNet18(_xnor_conv, lambda: nn.ReLU(inplace=True), num_classes=num_classes,
                    input_size=input_size, width=width, post_bn=False)
