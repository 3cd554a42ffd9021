"""Repeated augmentation (Hoffer et al. 2020, "Augment your batch"; Table 6 'Repeat Augment')."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

__all__ = ["RepeatedAugmentationSampler"]


class RepeatedAugmentationSampler(Sampler[int]):
    """Yields every dataset index ``num_repeats`` times per epoch; each copy gets its own augmentation.

    The (shuffled) order is repeated element-wise, ``[a, a, a, b, b, b, ...]``, then dealt round-robin
    to ``num_replicas`` processes (rank ``r`` takes positions ``r, r + R, ...``) as in DeiT's RASampler:
    on one process the copies of an image land in the same batch (Hoffer et al.), under DDP on
    different processes of the same step. Unlike DeiT it does not truncate the epoch: an epoch is
    ``num_repeats`` times longer, and it is padded by wrapping around so every replica gets
    ``ceil(len(dataset) * num_repeats / num_replicas)`` indices. Call :meth:`set_epoch` each epoch;
    the order depends only on ``(seed, epoch)``.
    """

    def __init__(self, dataset: Sized, num_repeats: int = 3, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        if len(dataset) == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.dataset_size = len(dataset)
        self.num_repeats = num_repeats
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.num_samples = math.ceil(self.dataset_size * num_repeats / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=g)
        else:
            order = torch.arange(self.dataset_size)
        indices = order.repeat_interleave(self.num_repeats).tolist()
        while len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
