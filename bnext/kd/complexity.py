"""Knowledge Complexity (paper Eq. 3) and the teacher table of paper Table 8.

    KC(T) = log10(1 + Params(T) / (Accuracy(T) * 1e6 + 1e-8))

with ``Accuracy`` the teacher's top-1 as a fraction (0.7753, not 77.53) and the base-10
logarithm (the reference implementation's reading; with it Table 8 is reproduced).  Lower KC
= a more compact teacher for its accuracy; the paper prefers low-KC teachers for binary
students and lets assistants join in increasing KC (section 4.1-4.2).

Parameter counts are computed from torchvision's real builders (``weights=None``, built on
the ``meta`` device: no memory, no download).  With them nine of Table 8's ten KC values are
reproduced exactly when rounded to three decimals; ResNet-34 gives 1.4876, printed as 1.487
in the paper (truncated), so all ten agree to within 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch

__all__ = ["TABLE8", "TABLE8_ACCURACY", "TeacherInfo", "count_params", "knowledge_complexity", "teacher_table"]

#: teacher top-1 on ImageNet (percent), paper Table 8 ("Teacher Test Top-1")
TABLE8_ACCURACY: dict[str, float] = {
    "resnet34": 73.31,
    "resnet50": 76.13,
    "resnet101": 77.37,
    "efficientnet_b0": 77.53,
    "efficientnet_b2": 78.06,
    "efficientnet_b4": 79.26,
    "convnext_tiny": 82.52,
    "convnext_small": 83.66,
    "convnext_base": 84.06,
    "resnext101_32x8d": 79.32,
}

#: the KC column of paper Table 8, as printed
TABLE8: dict[str, float] = {
    "resnet34": 1.487,
    "resnet50": 1.539,
    "resnet101": 1.768,
    "efficientnet_b0": 0.893,
    "efficientnet_b2": 1.103,
    "efficientnet_b4": 1.405,
    "convnext_tiny": 1.552,
    "convnext_small": 1.786,
    "convnext_base": 2.027,
    "resnext101_32x8d": 2.053,
}


def knowledge_complexity(params: int | float, accuracy: float) -> float:
    """Paper Eq. 3: ``log10(1 + params / (accuracy * 1e6 + 1e-8))``; ``accuracy`` is a fraction in [0, 1]."""
    if params < 0:
        raise ValueError(f"params must be >= 0, got {params}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1] (e.g. 0.7753), got {accuracy}")
    return math.log10(1.0 + float(params) / (accuracy * 1e6 + 1e-8))


@cache
def count_params(arch: str, num_classes: int = 1000) -> int:
    """Parameter count of a torchvision classification builder (built on the meta device, no weights)."""
    from torchvision.models import get_model

    with torch.device("meta"):
        model = get_model(arch, weights=None, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class TeacherInfo:
    arch: str
    params: int
    accuracy: float  # percent
    kc: float


def teacher_table() -> list[TeacherInfo]:
    """Table 8's teachers with builder parameter counts and KC (Eq. 3), in Table 8's order."""
    return [
        TeacherInfo(arch, count_params(arch), acc, knowledge_complexity(count_params(arch), acc / 100.0))
        for arch, acc in TABLE8_ACCURACY.items()
    ]
