"""Dataset factory by name: ``get_dataset`` (per-item, with augmentation) and ``load_tensors`` (whole split)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .cifar import load_cifar
from .digits import DigitsDataset, load_digits_tensors
from .imagefolder import load_imagefolder
from .info import check_split, dataset_info
from .synthetic import SyntheticDataset
from .transforms import EVAL_CROP_RATIO, AugmentSpec, build_transform

__all__ = ["get_dataset", "load_tensors"]


def get_dataset(name: str, split: str, *, root: str | Path | None = None, input_size: int | None = None,
                augment: str | AugmentSpec = "none", seed: int = 0, eval_crop: float = EVAL_CROP_RATIO,
                interpolation: str = "bilinear", verify_md5: bool = False) -> Dataset:
    """A dataset of ``(image [3, H, W] float32 normalized, int label)`` pairs.

    name: ``digits`` (embedded, no ``root``), ``cifar10`` / ``cifar100`` (torchvision format under
    ``root``, never downloaded), ``imagenet`` (``root/train/<class>/*``, ``root/val/<class>/*``) or
    ``synthetic`` (seeded noise). split: ``train`` or ``test`` (``val`` is an alias). input_size
    defaults to the dataset's (see :func:`dataset_info`). augment: a spec for
    :func:`build_transform`, applied to the train split only (the test split always uses ``none``);
    its batch part (mixup/cutmix) and ``repeated`` belong to the loader, see :func:`make_loaders`.
    seed: the digits train/test split, or the synthetic data. eval_crop, interpolation: the test
    split's resize (see :func:`build_transform`). Every dataset has ``.classes``.
    Missing or malformed folders raise :class:`DatasetLayoutError`; ``verify_md5`` checks the CIFAR
    files against the official md5 sums.
    """
    info = dataset_info(name)
    split = check_split(split)
    size = info.input_size if input_size is None else input_size
    train = split == "train"
    pre_sized = name in ("digits", "synthetic")  # stored at input_size already: no eval resize
    transform = build_transform(augment if train else "none", train=train, input_size=size,
                                mean=info.mean, std=info.std, resize=not pre_sized, eval_crop=eval_crop,
                                interpolation=interpolation)
    if name == "digits":
        return DigitsDataset(split, input_size=size, seed=seed, transform=transform)
    if name == "synthetic":
        return SyntheticDataset(split, input_size=size, num_classes=info.num_classes, seed=seed,
                                transform=transform)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, train=train, transform=transform, verify_md5=verify_md5)
    return load_imagefolder(root, split, transform=transform)


def load_tensors(name: str = "digits", split: str = "train", *, input_size: int = 32,
                 root: str | Path | None = None, seed: int = 0, verify_md5: bool = False) -> tuple[Tensor, Tensor]:
    """A whole split as normalized float32 images [N, 3, H, W] and long labels [N] (no augmentation).

    For the landscape engine and fast CPU training. Supports ``digits`` (default; the 1,437/360
    stratified split of seed 0, normalized with fixed train-split constants), ``synthetic`` and
    ``cifar10``/``cifar100`` (bilinear resize when ``input_size`` is not 32). ``imagenet`` is too
    large to hold in memory: use :func:`get_dataset`.
    """
    dataset_info(name)  # unknown names raise here
    if name == "digits":
        return load_digits_tensors(split, input_size=input_size, seed=seed)
    if name == "synthetic":
        ds = get_dataset(name, split, input_size=input_size, seed=seed)
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        return images, torch.tensor(ds.targets, dtype=torch.long)
    if name in ("cifar10", "cifar100"):
        info = dataset_info(name)
        ds = load_cifar(name, root, train=check_split(split) == "train", verify_md5=verify_md5)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255.0)
        if input_size != images.shape[-1]:
            images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", antialias=True,
                                   align_corners=False)
        mean = torch.tensor(info.mean).view(1, 3, 1, 1)
        std = torch.tensor(info.std).view(1, 3, 1, 1)
        return images.sub_(mean).div_(std), torch.tensor(ds.targets, dtype=torch.long)
    raise ValueError(f"load_tensors does not hold {name!r} in memory; use get_dataset({name!r}, ...) "
                     "with a DataLoader")
