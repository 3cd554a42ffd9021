"""Train/test DataLoaders for the trainer: samplers (shuffle, DDP, repeated), batch mixing, seeding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from .datasets import get_dataset
from .samplers import RepeatedAugmentationSampler
from .transforms import AugmentSpec, BatchMix, build_batch_transform, parse_augment

__all__ = ["EpochDataLoader", "MixCollate", "make_loaders"]

REPEATS = 3  # repeated augmentation: copies of each image per epoch


class MixCollate:
    """``default_collate`` followed by a batch transform (MixUp/CutMix); picklable for worker processes."""

    def __init__(self, batch_transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> None:
        self.batch_transform = batch_transform

    def __call__(self, items: list[Any]) -> tuple[Tensor, Tensor]:
        images, labels = default_collate(items)
        return self.batch_transform(images, labels)


class EpochDataLoader(DataLoader):
    """A DataLoader whose epoch ``e`` depends only on ``(seed, e)``: call :meth:`set_epoch` each epoch.

    It sets the sampler's epoch (shuffle order) and re-seeds the loader generator (worker seeds), so an
    interrupted and resumed run sees the same batches. With ``num_workers=0`` the per-image random
    augmentations draw from torch's global RNG: seed it (``torch.manual_seed``) and save its state
    with checkpoints for exact resumption.
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch`` (order of the sampler, seeds of the workers)."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(self.seed * 1_000_003 + epoch)


def _world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 1, 0
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("make_loaders(distributed=True) needs an initialized process group "
                           "(torch.distributed.init_process_group, e.g. under torchrun)")
    return dist.get_world_size(), dist.get_rank()


def make_loaders(name: str, *, batch_size: int, root: str | Path | None = None, input_size: int | None = None,
                 augment: str | AugmentSpec = "standard", num_workers: int = 0, seed: int = 0,
                 distributed: bool = False, drop_last: bool = False) -> tuple[EpochDataLoader, DataLoader]:
    """``(train_loader, test_loader)`` for a dataset name and augmentation spec (Table 6 names).

    ``batch_size`` is per process. The train loader shuffles with a seeded order that depends on
    ``(seed, epoch)`` (call ``train_loader.set_epoch(epoch)``); under ``distributed=True`` each rank
    gets its shard (DistributedSampler, or RepeatedAugmentationSampler with 3 repeats when the spec
    has ``repeated``). With ``mixup``/``cutmix`` in the spec the train loader yields soft targets
    [B, num_classes] (float, rows sum to 1) instead of class indices: use a loss that accepts them.
    The test loader never augments; under DDP it is sharded too (DistributedSampler pads the last
    shard by repeating samples, so reduce per-sample metrics with care).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    spec = parse_augment(augment)
    world, rank = _world(distributed)
    train_set: Dataset = get_dataset(name, "train", root=root, input_size=input_size, augment=spec, seed=seed)
    test_set: Dataset = get_dataset(name, "test", root=root, input_size=input_size, augment="none", seed=seed)

    if spec.repeated:
        train_sampler: Any = RepeatedAugmentationSampler(train_set, num_repeats=REPEATS, shuffle=True, seed=seed,
                                                         num_replicas=world, rank=rank)
    else:  # also on one process: its order depends on (seed, epoch) only
        train_sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    test_sampler = DistributedSampler(test_set, num_replicas=world, rank=rank, shuffle=False) if distributed \
        else None

    batch_transform: BatchMix | None = build_batch_transform(spec, len(train_set.classes))
    common: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available(),
    }  # no persistent workers: fresh workers per epoch take their seeds from set_epoch's generator
    train_loader = EpochDataLoader(
        train_set, batch_size=batch_size, sampler=train_sampler, drop_last=drop_last,
        collate_fn=MixCollate(batch_transform) if batch_transform is not None else None,
        generator=torch.Generator().manual_seed(seed), seed=seed, **common,
    )
    train_loader.set_epoch(0)
    test_loader = DataLoader(test_set, batch_size=batch_size, sampler=test_sampler, shuffle=False, **common)
    return train_loader, test_loader
