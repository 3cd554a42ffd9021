"""Seeded random images and labels, for shape and plumbing tests only (nothing to learn)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .info import check_split

__all__ = ["SyntheticDataset"]

_DEFAULT_SIZES = {"train": 512, "test": 128}


class SyntheticDataset(Dataset):
    """Uniform [0, 1) images [3, H, W] and uniform labels; item ``i`` depends only on (seed, split, i).

    ``transform`` receives the [0, 1] tensor (normalization belongs to the transform pipeline).
    """

    def __init__(self, split: str = "train", *, num_samples: int | None = None, num_classes: int = 10,
                 input_size: int = 32, seed: int = 0,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.split = check_split(split)
        self.num_samples = _DEFAULT_SIZES[self.split] if num_samples is None else num_samples
        if self.num_samples < 1 or num_classes < 1 or input_size < 1:
            raise ValueError("num_samples, num_classes and input_size must be positive")
        self.input_size = input_size
        self.transform = transform
        self.classes = [str(i) for i in range(num_classes)]
        self._split_id = 0 if self.split == "train" else 1
        self._seed = seed
        g = torch.Generator().manual_seed(self._item_seed(-1))
        self.targets = torch.randint(num_classes, (self.num_samples,), generator=g).tolist()

    def _item_seed(self, index: int) -> int:
        state = np.random.SeedSequence([self._seed, self._split_id, index + 1]).generate_state(1)
        return int(state[0])

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        g = torch.Generator().manual_seed(self._item_seed(index))
        image = torch.rand(3, self.input_size, self.input_size, generator=g)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
