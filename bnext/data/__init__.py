"""Data for the workbench: embedded digits (default), CIFAR-10/100, ImageNet-style folders, synthetic;
augmentations by name (paper Table 6) and loaders.

Public API::

    load_tensors(name="digits", split="train", *, input_size=32, root=None, seed=0) -> (images, labels)
    get_dataset(name, split, *, root=None, input_size=None, augment="none", seed=0) -> Dataset
    dataset_info(name) -> DatasetInfo(name, num_classes, input_size, mean, std)
    build_transform(name, *, train, input_size, mean, std) -> v2.Transform
    build_batch_transform(name, num_classes) -> BatchMix | None
    parse_augment(spec) -> AugmentSpec(image, batch, repeated)
    RepeatedAugmentationSampler(dataset, num_repeats=3, shuffle=True, seed=0, num_replicas=1, rank=0)
    make_loaders(name, *, batch_size, root=None, input_size=None, augment="standard", num_workers=0,
                 seed=0, distributed=False) -> (train_loader, test_loader)
"""

from .cifar import CIFAR_LAYOUTS, LocalCIFAR10, LocalCIFAR100
from .datasets import get_dataset, load_tensors
from .digits import DigitsDataset
from .imagefolder import IMAGEFOLDER_LAYOUT
from .info import DATASETS, DatasetInfo, DatasetLayoutError, dataset_info
from .loaders import EpochDataLoader, make_loaders
from .randaugment import RandAugmentMStd
from .samplers import RepeatedAugmentationSampler
from .synthetic import SyntheticDataset
from .transforms import AUGMENTATIONS, AugmentSpec, BatchMix, build_batch_transform, build_transform, parse_augment

__all__ = [
    "AUGMENTATIONS",
    "CIFAR_LAYOUTS",
    "DATASETS",
    "IMAGEFOLDER_LAYOUT",
    "AugmentSpec",
    "BatchMix",
    "DatasetInfo",
    "DatasetLayoutError",
    "DigitsDataset",
    "EpochDataLoader",
    "LocalCIFAR10",
    "LocalCIFAR100",
    "RandAugmentMStd",
    "RepeatedAugmentationSampler",
    "SyntheticDataset",
    "build_batch_transform",
    "build_transform",
    "dataset_info",
    "get_dataset",
    "load_tensors",
    "make_loaders",
    "parse_augment",
]
