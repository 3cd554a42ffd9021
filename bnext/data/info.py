"""Dataset facts (classes, resolution, normalization) and the layout error every loader raises."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "DatasetInfo", "DatasetLayoutError", "dataset_info"]


class DatasetLayoutError(ValueError):
    """A dataset folder is missing or does not have the layout its loader expects.

    The message names the path that was looked at, what was wrong and the layout expected.
    """


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: class count, default resolution and per-channel normalization."""

    name: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Digits: mean/std of the train split (seed 0, 1,437 images) after /16 and bilinear resizing to 32x32,
# computed once and fixed here so that train and test (and every run) share them.
DIGITS_MEAN = 0.30538338
DIGITS_STD = 0.32365167

_INFOS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, 32, (DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3),
    "cifar10": DatasetInfo("cifar10", 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": DatasetInfo("imagenet", 1000, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # uniform [0, 1) pixels: mean 1/2, std 1/sqrt(12)
    "synthetic": DatasetInfo("synthetic", 10, 32, (0.5,) * 3, (0.28867513,) * 3),
}

DATASETS: tuple[str, ...] = tuple(_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of a dataset name (one of :data:`DATASETS`).

    For ``imagenet`` the class count is ImageNet-1k's; a smaller class-folder tree reports its own
    count through ``len(dataset.classes)``.
    """
    try:
        return _INFOS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def check_split(split: str) -> str:
    """Normalize a split name to ``"train"`` or ``"test"`` (``"val"`` is an alias of ``"test"``)."""
    if split == "train":
        return "train"
    if split in ("test", "val"):
        return "test"
    raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'val'")
