"""The embedded default dataset: scikit-learn's 1,797 real 8x8 handwritten digits (no download).

A fixed, seeded, stratified split gives 1,437 train / 360 test images. Pixels (0..16) are scaled to
[0, 1], resized bilinearly (antialiased) to the requested resolution and repeated to 3 channels, so
every CIFAR-shaped model runs on them unchanged. Normalization uses fixed constants (the train
split's mean/std at 32x32, see :mod:`bnext.data.info`), shared by both splits.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .info import DIGITS_MEAN, DIGITS_STD, check_split

__all__ = ["DIGITS_TEST_SIZE", "DigitsDataset", "digits_raw", "load_digits_tensors"]

DIGITS_TEST_SIZE = 360
_NATIVE = 8
# above this resolution images are resized per item instead of all at once (memory)
_PRECOMPUTE_MAX = 64


@lru_cache(maxsize=8)
def _split_arrays(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]  # [1797, 1, 8, 8] in [0, 1]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=seed
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    x, y = images[idx], labels[idx]
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _resize(images: Tensor, input_size: int) -> Tensor:
    if input_size == images.shape[-1]:
        return images
    return F.interpolate(images, size=(input_size, input_size), mode="bilinear", antialias=True,
                         align_corners=False)


def digits_raw(split: str = "train", *, input_size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One split as un-normalized single-channel images in [0, 1], [N, 1, H, W], and long labels [N]."""
    if input_size < 1:
        raise ValueError(f"input_size must be positive, got {input_size}")
    x, y = _split_arrays(check_split(split), seed)
    return _resize(torch.tensor(x), input_size), torch.tensor(y)


def load_digits_tensors(split: str = "train", *, input_size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The whole split, normalized, as [N, 3, H, W] float32 and labels [N] long.

    The three channels are an ``expand`` view of one gray channel (no extra memory); call
    ``.contiguous()`` before writing into the tensor in place.
    """
    images, labels = digits_raw(split, input_size=input_size, seed=seed)
    images = (images - DIGITS_MEAN) / DIGITS_STD
    return images.expand(-1, 3, -1, -1), labels


class DigitsDataset(Dataset):
    """scikit-learn digits as (image, label) pairs; images are [3, H, W] float in [0, 1].

    ``transform`` receives that [0, 1] tensor, so image-space augmentations (crop, flip, RandAugment)
    run before the normalization at the end of the pipelines of :func:`bnext.data.build_transform`.
    With ``transform=None`` the un-normalized [0, 1] image is returned.
    """

    def __init__(self, split: str = "train", *, input_size: int = 32, seed: int = 0,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.split = check_split(split)
        self.input_size = input_size
        self.transform = transform
        self.classes = [str(i) for i in range(10)]
        # store 8x8 and resize per item at large resolutions (224x224 would need ~290 MB per split)
        size = input_size if input_size <= _PRECOMPUTE_MAX else _NATIVE
        self.images, self.labels = digits_raw(self.split, input_size=size, seed=seed)
        self.targets = self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index : index + 1]
        if image.shape[-1] != self.input_size:
            image = _resize(image, self.input_size)
        image = image[0].expand(3, -1, -1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
