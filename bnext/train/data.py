"""Training batches whose order and augmentation are a function of ``(seed, epoch)``.

Two paths behind one interface (``len(batches)``, ``batches.epoch(e)`` -> iterable of
``(images, labels)``):

* :class:`TensorBatches` - the whole split in memory (``bnext.data.load_tensors``), per-sample
  random crop (zero padding in image space) + horizontal flip done on the batch tensor with a
  generator seeded by ``(seed, epoch)``.  Much faster than a per-sample ``DataLoader`` on tiny
  sets such as digits.  Under DDP every process draws the same global batch and takes its
  contiguous chunk, so ``R`` processes with per-process batch ``B/R`` see exactly what one
  process sees with batch ``B`` and ``micro_batches=R``.
* :class:`LoaderBatches` - ``bnext.data.get_dataset`` + ``DataLoader`` with a
  ``DistributedSampler`` (or ``RepeatedAugmentationSampler``) whose epoch is set each epoch,
  and a loader generator reseeded by ``(seed, epoch)`` (worker seeds).

Batch-level MixUp/CutMix is not applied here; :func:`bnext.train.engine.train_one_epoch` takes it
as ``batch_transform``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

try:  # the package's public API
    from ..data import (
        RepeatedAugmentationSampler,
        build_batch_transform,
        dataset_info,
        get_dataset,
        load_tensors,
        parse_augment,
    )
except ImportError:  # pragma: no cover - bnext/data/__init__.py not there yet: use the modules
    from ..data.datasets import get_dataset, load_tensors
    from ..data.info import dataset_info
    from ..data.samplers import RepeatedAugmentationSampler
    from ..data.transforms import build_batch_transform, parse_augment

__all__ = [
    "DataBundle",
    "LoaderBatches",
    "TensorBatches",
    "build_data",
    "epoch_seed",
    "use_in_memory",
]

IN_MEMORY_DATASETS = ("digits", "synthetic")


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed derived from ``(seed, epoch, stream)`` (NumPy SeedSequence)."""
    state = np.random.SeedSequence([abs(int(seed)), int(seed < 0), int(epoch), int(stream)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class TensorBatches:
    """In-memory batches of a normalized image tensor (see module docstring).

    Args:
        images, labels: the whole split ([N, 3, H, W] normalized, [N] long).
        batch_size: the global batch; each of ``world_size`` processes yields ``batch_size / world_size``.
        seed: order and augmentation are a function of ``(seed, epoch)``.
        augment: ``"standard"`` (random crop with ``H // 8`` padding + flip) or ``"none"``; other
            image augmentations need the loader path.
        pad_value: per-channel value of a black pixel after normalization (``-mean / std``).
        shuffle, drop_last: as ``DataLoader``; the last partial batch is also dropped when it would
            give a process a single sample (BatchNorm).
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *, seed: int = 0,
                 augment: str = "none", pad_value: Tensor | float = 0.0, shuffle: bool = True,
                 drop_last: bool = False, world_size: int = 1, rank: int = 0, flip: bool = True) -> None:
        if augment not in ("none", "standard"):
            raise ValueError(f"TensorBatches supports augment 'none' or 'standard', got {augment!r}")
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        self.images = images.contiguous()
        self.labels = labels
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.flip = flip
        self.pad = max(1, images.shape[-1] // 8)
        self.pad_value = torch.as_tensor(pad_value, dtype=images.dtype).reshape(-1, 1, 1)
        self.shuffle = shuffle
        self.world_size = world_size
        self.rank = rank
        n = len(labels)
        full, rest = divmod(n, batch_size)
        keep_rest = rest > 0 and not drop_last and rest // world_size >= 2 and rest % world_size == 0
        self._sizes = [batch_size] * full + ([rest] if keep_rest else [])
        if not self._sizes:
            raise ValueError(f"{n} samples do not fill one batch of {batch_size} (world size {world_size})")

    def __len__(self) -> int:
        return len(self._sizes)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = len(self.labels)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        start = 0
        for size in self._sizes:
            idx = order[start : start + size]
            start += size
            if self.augment == "standard":
                # parameters for the whole global batch, so they do not depend on the world size
                shifts = torch.randint(0, 2 * self.pad + 1, (size, 2), generator=g)
                flips = torch.rand(size, generator=g) < 0.5
            chunk = size // self.world_size
            sl = slice(self.rank * chunk, (self.rank + 1) * chunk)
            x = self.images[idx[sl]]
            if self.augment == "standard":
                x = self._crop_flip(x, shifts[sl], flips[sl] if self.flip else None)
            yield x, self.labels[idx[sl]]

    def _crop_flip(self, x: Tensor, shifts: Tensor, flips: Tensor | None) -> Tensor:
        b, c, h, w = x.shape
        p = self.pad
        padded = self.pad_value.to(x.dtype).expand(c, h + 2 * p, w + 2 * p).repeat(b, 1, 1, 1)
        padded[:, :, p : p + h, p : p + w] = x
        rows = shifts[:, 0:1] + torch.arange(h)  # [B, H]
        cols = shifts[:, 1:2] + torch.arange(w)  # [B, W]
        if flips is not None:
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        bi = torch.arange(b)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
        return out.permute(0, 3, 1, 2).contiguous()


class LoaderBatches:
    """A ``DataLoader`` whose sampler epoch and generator seed follow ``(seed, epoch)``."""

    def __init__(self, loader: DataLoader, seed: int) -> None:
        self.loader = loader
        self.seed = seed

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(epoch_seed(self.seed, epoch, 1))
        return self.loader


@dataclass
class DataBundle:
    """What a run needs from the data: train/test batches, class count, input size, batch transform."""

    train: TensorBatches | LoaderBatches
    test: Iterable[tuple[Tensor, Tensor]]
    num_classes: int
    input_size: int
    batch_transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None
    in_memory: bool


def use_in_memory(name: str, augment: str, in_memory: bool | None) -> bool:
    """Whether the in-memory path applies (``None`` = auto: digits/synthetic with none/standard images)."""
    spec = parse_augment(augment)
    possible = set(spec.image) <= {"standard"} and not spec.repeated
    if in_memory is None:
        return possible and name in IN_MEMORY_DATASETS
    if in_memory and not possible:
        raise ValueError(f"data.in_memory=true supports augment none/standard (+mixup/cutmix), got {augment!r}")
    return bool(in_memory)


def _chunks(x: Tensor, y: Tensor, batch_size: int, world_size: int, rank: int) -> list[tuple[Tensor, Tensor]]:
    n = len(y)
    per = -(-n // world_size)
    lo, hi = rank * per, min(n, (rank + 1) * per)
    return [(x[i : min(i + batch_size, hi)], y[i : min(i + batch_size, hi)]) for i in range(lo, hi, batch_size)]


def build_data(cfg: Any, *, world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> DataBundle:
    """Train/test batches for a :class:`~bnext.train.config.Config` (``cfg.data`` and ``cfg.seed``).

    The test split is sharded across processes (contiguous, no padding), so summed metrics are exact.
    """
    d = cfg.data
    info = dataset_info(d.name)
    size = d.input_size or info.input_size
    spec = parse_augment(d.augment)
    if d.batch_size % world_size:
        raise ValueError(f"data.batch_size {d.batch_size} must be divisible by the {world_size} processes")
    eval_bs = d.eval_batch_size or 2 * d.batch_size
    local_bs = d.batch_size // world_size
    if use_in_memory(d.name, d.augment, d.in_memory):
        xtr, ytr = load_tensors(d.name, "train", input_size=size, root=d.root, seed=d.split_seed,
                                verify_md5=d.verify_md5)
        xte, yte = load_tensors(d.name, "test", input_size=size, root=d.root, seed=d.split_seed,
                                verify_md5=d.verify_md5)
        pad_value = -torch.tensor(info.mean) / torch.tensor(info.std)
        train = TensorBatches(xtr, ytr, d.batch_size, seed=cfg.seed, augment="standard" if spec.image else "none",
                              pad_value=pad_value, drop_last=False, world_size=world_size, rank=rank)
        test: Iterable = _chunks(xte.contiguous(), yte, eval_bs, world_size, rank)
        num_classes = info.num_classes
        in_memory = True
    else:
        train_ds = get_dataset(d.name, "train", root=d.root, input_size=size, augment=d.augment, seed=d.split_seed,
                               verify_md5=d.verify_md5)
        test_ds = get_dataset(d.name, "test", root=d.root, input_size=size, augment="none", seed=d.split_seed,
                              eval_crop=d.eval_crop, interpolation=d.eval_interpolation, verify_md5=d.verify_md5)
        if spec.repeated:
            sampler: Any = RepeatedAugmentationSampler(train_ds, num_repeats=3, seed=cfg.seed,
                                                       num_replicas=world_size, rank=rank)
        else:
            sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed,
                                         drop_last=True)
        loader = DataLoader(train_ds, batch_size=local_bs, sampler=sampler, num_workers=d.num_workers,
                            pin_memory=pin_memory, drop_last=True, generator=torch.Generator(),
                            persistent_workers=False)
        train = LoaderBatches(loader, cfg.seed)
        n = len(test_ds)
        per = -(-n // world_size)
        shard = torch.utils.data.Subset(test_ds, range(rank * per, min(n, (rank + 1) * per)))
        test = DataLoader(shard, batch_size=max(1, eval_bs // world_size), shuffle=False,
                          num_workers=d.num_workers, pin_memory=pin_memory)
        classes = getattr(train_ds, "classes", None)
        num_classes = len(classes) if classes else info.num_classes
        in_memory = False
    batch_transform = build_batch_transform(spec, num_classes) if spec.batch else None
    return DataBundle(train, test, num_classes, size, batch_transform, in_memory)
