"""ImageNet-style class folders: ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torchvision import datasets

from .info import DatasetLayoutError, check_split

__all__ = ["IMAGEFOLDER_LAYOUT", "load_imagefolder"]

IMAGEFOLDER_LAYOUT = (
    "<root>/train/<class>/<image> and <root>/val/<class>/<image> (one sub-folder per class, the same "
    "class folders in both; images .jpg/.jpeg/.png/...; the raw flat ILSVRC2012 val/ must first be "
    "sorted into class folders)"
)
_SPLIT_DIRS = {"train": "train", "test": "val"}


def _class_dirs(folder: Path) -> list[str]:
    # the same rule as torchvision's find_classes, so the indices agree
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def load_imagefolder(root: str | Path | None, split: str, *,
                     transform: Callable | None = None) -> datasets.ImageFolder:
    """A torchvision ``ImageFolder`` over ``<root>/train`` or ``<root>/val`` (split 'test' means val).

    Raises :class:`DatasetLayoutError` when the folder is missing, has no class folders or images,
    or when val/ and train/ hold different class folders (labels would silently shift).
    """
    if root is None:
        raise DatasetLayoutError(f"imagenet: no root folder given; expected layout {IMAGEFOLDER_LAYOUT}")
    root = Path(root).expanduser()
    folder = root / _SPLIT_DIRS[check_split(split)]
    if not folder.is_dir():
        raise DatasetLayoutError(f"imagenet: folder {folder} not found; expected layout {IMAGEFOLDER_LAYOUT}")
    classes = _class_dirs(folder)
    if not classes:
        raise DatasetLayoutError(f"imagenet: {folder} has no class sub-folders; expected layout "
                                 f"{IMAGEFOLDER_LAYOUT}")
    other = root / ("val" if folder.name == "train" else "train")
    if other.is_dir():
        other_classes = _class_dirs(other)
        if other_classes and other_classes != classes:
            only_here = sorted(set(classes) - set(other_classes))[:5]
            only_there = sorted(set(other_classes) - set(classes))[:5]
            raise DatasetLayoutError(
                f"imagenet: {folder} and {other} hold different class folders ({len(classes)} vs "
                f"{len(other_classes)}; only in {folder.name}/: {only_here}, only in {other.name}/: "
                f"{only_there}); both splits need the same classes so labels match"
            )
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as err:  # torchvision: no valid image file in some class folder
        raise DatasetLayoutError(f"imagenet: {folder}: {err}; expected layout {IMAGEFOLDER_LAYOUT}") from err
