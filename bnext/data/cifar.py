"""CIFAR-10/100 from a local folder in torchvision's format (``download=False`` always).

torchvision's loader checks each file's md5 against the official archive. Here that check is
reduced to a presence check by default (``verify_md5=False``), so the same torchvision code path
also loads re-pickled copies and the tiny fake batches the tests write; the files' content is
validated instead (array shapes, label count and range). Pass ``verify_md5=True`` to keep the
official checksums.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torchvision import datasets

from .info import DatasetLayoutError

__all__ = ["CIFAR_LAYOUTS", "LocalCIFAR10", "LocalCIFAR100", "cifar_folder", "load_cifar"]

# name -> (folder inside root, files inside it, human-readable layout)
CIFAR_LAYOUTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
         "batches.meta"),
        "<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} "
        "(the extracted cifar-10-python.tar.gz)",
    ),
    "cifar100": (
        "cifar-100-python",
        ("train", "test", "meta"),
        "<root>/cifar-100-python/{train, test, meta} (the extracted cifar-100-python.tar.gz)",
    ),
}


def cifar_folder(name: str, root: str | Path | None) -> Path:
    """Check the CIFAR layout under ``root`` and return the root torchvision expects.

    ``root`` may also point at the batches folder itself (``.../cifar-10-batches-py``).
    Raises :class:`DatasetLayoutError` naming the path and the expected layout.
    """
    folder, files, layout = CIFAR_LAYOUTS[name]
    if root is None:
        raise DatasetLayoutError(f"{name}: no root folder given; expected layout {layout}")
    root = Path(root).expanduser()
    if root.name == folder:
        root = root.parent
    base = root / folder
    if not base.is_dir():
        raise DatasetLayoutError(f"{name}: folder {base} not found; expected layout {layout}")
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise DatasetLayoutError(f"{name}: {base} lacks {', '.join(missing)}; expected layout {layout}")
    return root


class _LocalCIFARMixin:
    """Shared construction: layout check, optional md5 skip, content validation."""

    _name = ""

    def __init__(self, root: str | Path, train: bool = True, transform: Callable | None = None,
                 verify_md5: bool = False) -> None:
        root = cifar_folder(self._name, root)
        if not verify_md5:  # md5=None makes torchvision's check_integrity a presence check
            self.train_list = [[f, None] for f, _ in type(self).train_list]
            self.test_list = [[f, None] for f, _ in type(self).test_list]
            self.meta = {**type(self).meta, "md5": None}
        layout = CIFAR_LAYOUTS[self._name][2]
        try:
            super().__init__(root, train=train, transform=transform, download=False)
        except RuntimeError as err:  # torchvision: "not found or corrupted" (md5 mismatch)
            raise DatasetLayoutError(f"{self._name}: files under {root} failed torchvision's md5 check "
                                     f"({err}); expected the official {layout}") from err
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise DatasetLayoutError(f"{self._name}: could not read the pickled batches under {root} "
                                     f"({type(err).__name__}: {err}); expected {layout}, each a pickled "
                                     "dict with 'data' (uint8 [N, 3072]) and labels") from err
        self._validate(root)

    def _validate(self, root: Path) -> None:
        n = len(self.data)
        if len(self.targets) != n:
            raise DatasetLayoutError(f"{self._name}: {root} has {n} images but {len(self.targets)} labels")
        if self.data.dtype != np.uint8:
            raise DatasetLayoutError(f"{self._name}: image data under {root} is {self.data.dtype}, "
                                     "expected uint8")
        labels = np.asarray(self.targets)
        if n and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DatasetLayoutError(f"{self._name}: labels under {root} fall outside "
                                     f"0..{len(self.classes) - 1} (classes from the meta file)")


class LocalCIFAR10(_LocalCIFARMixin, datasets.CIFAR10):
    """torchvision CIFAR-10 read from ``root`` only; see the module note on md5 checks."""

    _name = "cifar10"


class LocalCIFAR100(_LocalCIFARMixin, datasets.CIFAR100):
    """torchvision CIFAR-100 (fine labels) read from ``root`` only; see the module note on md5 checks."""

    _name = "cifar100"


def load_cifar(name: str, root: str | Path | None, *, train: bool, transform: Callable | None = None,
               verify_md5: bool = False) -> LocalCIFAR10:
    """Build :class:`LocalCIFAR10` or :class:`LocalCIFAR100` from ``name`` ('cifar10' / 'cifar100')."""
    cls = {"cifar10": LocalCIFAR10, "cifar100": LocalCIFAR100}[name]
    return cls(root, train=train, transform=transform, verify_md5=verify_md5)
