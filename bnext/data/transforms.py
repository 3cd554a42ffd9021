"""Augmentations by name (paper Table 6, section 5.1), built from torchvision.transforms.v2.

Names, combined with '+' (e.g. ``randaugment+mixup``, ``standard+cutmix+repeated``):

* ``none``: no augmentation (resize/center-crop if needed, then normalize).
* ``standard``: below 64 px, RandomCrop(input_size, padding=input_size // 8, i.e. 4 at 32) + horizontal
  flip (CIFAR, section 5.1); from 64 px, RandomResizedCrop(input_size, scale=(0.08, 1)) + flip (ImageNet).
* ``randaugment``: the paper's RandAugment(7, 0.5): 2 ops, magnitude 7, magnitude std 0.5, see
  :class:`~bnext.data.randaugment.RandAugmentMStd`. As in the paper's ImageNet pipeline (and timm), it is
  applied after the ``standard`` crop + flip, which it therefore implies.
* ``mixup`` (alpha 0.8), ``cutmix`` (alpha 1.0): batch-level (DeiT's alphas); with both, each batch uses
  one of the two at random. They return soft targets [B, num_classes], so the loss must accept soft
  (probability) targets, e.g. ``torch.nn.functional.cross_entropy`` with float targets.
* ``repeated``: repeated augmentation (Hoffer et al. 2020), a sampler rather than a transform: see
  :class:`~bnext.data.samplers.RepeatedAugmentationSampler`.

Image pipelines take PIL images or tensors (uint8, or float in [0, 1]); augmentations run before the
final float conversion and normalization.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchvision.transforms import v2

from .randaugment import RandAugmentMStd

__all__ = [
    "AUGMENTATIONS",
    "AugmentSpec",
    "BatchMix",
    "build_batch_transform",
    "build_transform",
    "parse_augment",
]

IMAGE_AUGMENTATIONS = ("standard", "randaugment")
BATCH_AUGMENTATIONS = ("mixup", "cutmix")
AUGMENTATIONS: tuple[str, ...] = ("none", *IMAGE_AUGMENTATIONS, *BATCH_AUGMENTATIONS, "repeated")

# the input size from which the ImageNet recipe (RandomResizedCrop, resize + center crop) applies
LARGE_INPUT = 64
EVAL_CROP_RATIO = 0.875  # 256 -> 224
MIXUP_ALPHA = 0.8
CUTMIX_ALPHA = 1.0


@dataclass
class AugmentSpec:
    """A parsed augmentation spec: per-image transforms, batch-level mixing, repeated sampling."""

    image: list[str] = field(default_factory=list)
    batch: list[str] = field(default_factory=list)
    repeated: bool = False

    def __str__(self) -> str:
        names = [*self.image, *self.batch] + (["repeated"] if self.repeated else [])
        return "+".join(names) or "none"


def parse_augment(spec: str | AugmentSpec) -> AugmentSpec:
    """Parse ``'name+name+...'`` (see module doc) into an :class:`AugmentSpec`.

    ``randaugment`` implies ``standard``. Unknown, empty or repeated names raise ``ValueError``
    listing the valid ones.
    """
    if isinstance(spec, AugmentSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"augmentation spec must be a string, got {type(spec).__name__}")
    tokens = [t.strip().lower() for t in spec.split("+")]
    valid = ", ".join(AUGMENTATIONS)
    for token in tokens:
        if token not in AUGMENTATIONS:
            what = "empty name" if not token else f"unknown augmentation {token!r}"
            raise ValueError(f"{what} in {spec!r}; valid names: {valid} (combine them with '+')")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"augmentation {spec!r} names the same augmentation twice")
    image = [n for n in IMAGE_AUGMENTATIONS if n in tokens]
    if "randaugment" in image and "standard" not in image:
        image.insert(0, "standard")
    batch = [n for n in BATCH_AUGMENTATIONS if n in tokens]
    return AugmentSpec(image=image, batch=batch, repeated="repeated" in tokens)


def build_transform(name: str | AugmentSpec, *, train: bool, input_size: int, mean: Sequence[float],
                    std: Sequence[float], resize: bool = True, eval_crop: float = EVAL_CROP_RATIO,
                    interpolation: str = "bilinear") -> v2.Transform:
    """The per-image pipeline for an augmentation spec; batch parts and ``repeated`` are ignored here.

    Output: float32 [3, H, W] (or [B, 3, H, W] for a batch), normalized with ``mean``/``std``.
    Evaluation (``train=False``), like ``none``, only resizes: to ``input_size`` below 64 px, and
    resize to ``input_size / eval_crop`` (0.875 by default; the authors' BNext evaluation uses 0.95 and
    ``interpolation="bicubic"``) + center crop from 64 px. ``resize=False`` skips that for data
    already stored at ``input_size`` (digits, synthetic).
    """
    if input_size < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    if not 0 < eval_crop <= 1:
        raise ValueError(f"eval_crop must be in (0, 1], got {eval_crop}")
    modes = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}
    if interpolation not in modes:
        raise ValueError(f"interpolation must be one of {sorted(modes)}, got {interpolation!r}")
    mode = modes[interpolation]
    spec = parse_augment(name)
    ops: list[v2.Transform] = [v2.ToImage()]
    if train and spec.image:
        if "standard" in spec.image:
            if input_size >= LARGE_INPUT:
                ops.append(v2.RandomResizedCrop(input_size, scale=(0.08, 1.0), antialias=True))
            else:
                if resize:
                    ops.append(v2.Resize((input_size, input_size), antialias=True))
                ops.append(v2.RandomCrop(input_size, padding=max(1, input_size // 8)))
            ops.append(v2.RandomHorizontalFlip())
        if "randaugment" in spec.image:
            ops.append(RandAugmentMStd(num_ops=2, magnitude=7, magnitude_std=0.5))
    elif resize:
        if input_size >= LARGE_INPUT:
            ops += [v2.Resize(round(input_size / eval_crop), interpolation=mode, antialias=True),
                    v2.CenterCrop(input_size)]
        else:
            ops.append(v2.Resize((input_size, input_size), interpolation=mode, antialias=True))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]
    return v2.Compose(ops)


class BatchMix:
    """MixUp and/or CutMix on a collated batch: ``(images [B,...], labels [B] long) -> (images, soft [B, C])``.

    The soft targets sum to 1 per row; train with a loss that accepts probability targets.
    """

    def __init__(self, names: Sequence[str], num_classes: int, *, mixup_alpha: float = MIXUP_ALPHA,
                 cutmix_alpha: float = CUTMIX_ALPHA) -> None:
        if num_classes < 2:
            raise ValueError(f"mixing needs at least 2 classes, got {num_classes}")
        mixers: list[v2.Transform] = []
        if "mixup" in names:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if "cutmix" in names:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not mixers:
            raise ValueError(f"no batch augmentation among {list(names)}; expected mixup and/or cutmix")
        self.names = list(names)
        self.num_classes = num_classes
        self.transform = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        images, soft = self.transform(images, labels)
        return images.as_subclass(Tensor), soft.as_subclass(Tensor)

    def __repr__(self) -> str:
        return f"BatchMix({'+'.join(self.names)}, num_classes={self.num_classes})"


def build_batch_transform(name: str | AugmentSpec, num_classes: int) -> Callable[[Tensor, Tensor],
                                                                                 tuple[Tensor, Tensor]] | None:
    """The batch-level part of a spec (MixUp/CutMix) as a :class:`BatchMix`, or ``None`` if it has none.

    Apply it to collated batches; it turns labels into soft targets, so the loss must accept them.
    """
    spec = parse_augment(name)
    return BatchMix(spec.batch, num_classes) if spec.batch else None
