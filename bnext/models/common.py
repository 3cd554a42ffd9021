"""Pieces shared by every model family: channel rounding, stems, pooled shortcuts."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

#: inputs up to this size use the 32x32 stem (3x3 stride 1, no max-pool)
SMALL_INPUT_MAX = 64


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by a width multiplier (at least 1)."""
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return max(1, int(round(channels * width)))


def is_small_input(input_size: int) -> bool:
    if input_size < 8:
        raise ValueError(f"input_size must be >= 8 pixels, got {input_size}")
    return input_size <= SMALL_INPUT_MAX


def check_input_size(x: Tensor, spec: dict[str, Any] | None) -> None:
    """Refuse an NCHW batch whose spatial size differs from the model's recorded ``input_size``.

    The zoo's models pool globally, so another size runs without complaint and silently answers
    badly (a digits model trained at 16x16 given 32x32 images scores ~11%).
    """
    size = (spec or {}).get("input_size")
    if size is None or x.dim() != 4 or (x.shape[-2] == size and x.shape[-1] == size):
        return
    raise ValueError(
        f"input images are {x.shape[-2]}x{x.shape[-1]} but this model was trained for {size}x{size} inputs "
        f"(input_size={size} in its spec); resize the data to {size}x{size} (e.g. --input-size {size})"
    )


def input_size_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of models rebuilt from checkpoints: :func:`check_input_size` on the input."""
    if args and isinstance(args[0], Tensor):
        check_input_size(args[0], getattr(module, "spec", None))


def resnet_stem(out_channels: int, input_size: int, act: nn.Module | None = None) -> nn.Sequential:
    """ResNet-style real-valued stem.

    ImageNet (``input_size > 64``): 7x7 stride-2 conv + BN (+ act) + 3x3 stride-2 max-pool.
    32x32 inputs: 3x3 stride-1 conv + BN (+ act), no max-pool (the BNext CIFAR stem, used
    for every model of the zoo so that comparisons are fair).
    """
    if is_small_input(input_size):
        layers: list[nn.Module] = [nn.Conv2d(3, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels)]
    else:
        layers = [nn.Conv2d(3, out_channels, 7, 2, 3, bias=False), nn.BatchNorm2d(out_channels)]
    if act is not None:
        layers.append(act)
    if not is_small_input(input_size):
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers)


def avg_pool2x2() -> nn.AvgPool2d:
    """2x2 average pool whose output size matches a stride-2, padding-1 3x3 conv (ceil)."""
    return nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)


class PooledProjection(nn.Sequential):
    """Real-valued downsample shortcut: 2x2 average pool (if strided) -> 1x1 conv -> BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        layers: list[nn.Module] = [avg_pool2x2()] if stride != 1 else []
        layers += [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        super().__init__(*layers)


class ClassifierHead(nn.Module):
    """Optional activation -> global average pool -> flatten -> ``classifier`` (Linear with bias)."""

    def __init__(self, in_features: int, num_classes: int, act: nn.Module | None = None) -> None:
        super().__init__()
        self.act = act if act is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.act(x))))
