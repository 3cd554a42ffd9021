"""CIFAR-10/100 from a local folder in the official python format (never downloaded).

The batch files are pickles. They are read with :class:`SafeCIFARUnpickler`, which admits only
what the official files hold (dicts, lists, bytes, str, int and NumPy arrays with their dtypes,
rebuilt by NumPy's reconstruct functions) and rejects every other global with
:class:`DatasetLayoutError` naming the file: a crafted ``data_batch_1`` cannot run code.
``verify_md5=True`` (config ``data.verify_md5: true``) also checks each file against the official
md5 sums (torchvision's list); by default the content is validated instead (array shapes, label
count and range), so re-pickled copies and small test batches load too.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torchvision import datasets
from torchvision.datasets.vision import VisionDataset

from .info import DatasetLayoutError

__all__ = ["CIFAR_LAYOUTS", "LocalCIFAR10", "LocalCIFAR100", "SafeCIFARUnpickler", "cifar_folder", "load_cifar",
           "safe_load_pickle"]

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


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The NumPy names an array pickle refers to (Python 2 files say ``numpy.core``, NumPy 2 ``numpy._core``)."""
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 (in-band buffers)
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = __import__("_codecs").encode  # bytes in a Python 3 protocol-2 pickle
    return allowed


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle refers to a global outside :class:`SafeCIFARUnpickler`'s list."""


class SafeCIFARUnpickler(pickle.Unpickler):
    """An unpickler that resolves only NumPy's array/dtype reconstructors (and ``_codecs.encode``).

    Plain containers and scalars need no global; anything else (``os.system``, ``builtins.eval``,
    a class with ``__reduce__``) raises :class:`pickle.UnpicklingError` before it is called.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if SafeCIFARUnpickler._allowed is None:
            SafeCIFARUnpickler._allowed = _numpy_globals()
        try:
            return SafeCIFARUnpickler._allowed[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(f"global {module}.{name} is not allowed (only NumPy arrays, dtypes, "
                                         "dicts, lists, bytes, str and int)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenGlobalError("persistent ids are not allowed")


def safe_load_pickle(path: str | Path, name: str = "cifar") -> Any:
    """Unpickle one CIFAR file with :class:`SafeCIFARUnpickler` (``encoding='latin1'``, as torchvision).

    Raises :class:`DatasetLayoutError` naming the file for a forbidden global, a truncated or
    foreign file, or an unreadable one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetLayoutError(f"{name}: cannot read {path} ({e.strerror or e})") from None
    try:
        obj = SafeCIFARUnpickler(io.BytesIO(data), encoding="latin1").load()
    except ForbiddenGlobalError as e:
        raise DatasetLayoutError(f"{name}: {path} was refused by the safe CIFAR reader ({e}); expected a batch "
                                 "file of the official python version (a pickled dict of NumPy arrays and "
                                 "lists)") from None
    except Exception as e:  # noqa: BLE001 - truncated or foreign pickles fail in many ways
        raise DatasetLayoutError(f"{name}: {path} is not a readable CIFAR batch file ({type(e).__name__}: "
                                 f"{e or 'no detail'}); expected a pickled dict of NumPy arrays and lists") from None
    if not isinstance(obj, dict):
        raise DatasetLayoutError(f"{name}: {path} holds a {type(obj).__name__}, expected a dict")
    return {_text(k): v for k, v in obj.items()}  # a Python 3 re-pickle keeps bytes keys


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def cifar_folder(name: str, root: str | Path | None) -> Path:
    """Check the CIFAR layout under ``root`` and return the root torchvision expects.

    ``root`` may also point at the batches folder itself (``.../cifar-10-batches-py``).
    Raises :class:`DatasetLayoutError` naming the path and the expected layout.
    """
    folder, files, layout = CIFAR_LAYOUTS[name]
    if root is None or root == "???":
        raise DatasetLayoutError(f"{name}: no root folder given (set data.root); expected layout {layout}")
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


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _LocalCIFARMixin:
    """Shared construction: layout check, optional md5 check, safe unpickling, content validation."""

    _name = ""

    def __init__(self, root: str | Path, train: bool = True, transform: Callable | None = None,
                 verify_md5: bool = False) -> None:
        root = cifar_folder(self._name, root)
        cls = type(self)
        VisionDataset.__init__(self, str(root), transform=transform)  # torchvision's attributes, no pickle
        self.train = train
        base = root / cls.base_folder
        files = cls.train_list if train else cls.test_list
        if verify_md5:
            for filename, md5 in [*files, [cls.meta["filename"], cls.meta["md5"]]]:
                found = _md5(base / filename)
                if found != md5:
                    raise DatasetLayoutError(f"{self._name}: {base / filename} has md5 {found}, the official file "
                                             f"has {md5} (data.verify_md5 is on); expected the official "
                                             f"{CIFAR_LAYOUTS[self._name][2]}")
        data, targets = [], []
        for filename, _ in files:
            entry = safe_load_pickle(base / filename, self._name)
            labels = entry.get("labels", entry.get("fine_labels"))
            if "data" not in entry or labels is None:
                raise DatasetLayoutError(f"{self._name}: {base / filename} lacks 'data' or labels (keys "
                                         f"{sorted(map(str, entry))[:6]}); expected 'data' (uint8 [N, 3072]) and "
                                         "'labels' / 'fine_labels'")
            array = entry["data"]
            if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 2 \
                    or array.shape[1] != 3072:
                found = (f"{array.dtype} {list(array.shape)}" if isinstance(array, np.ndarray)
                         else type(array).__name__)
                raise DatasetLayoutError(f"{self._name}: 'data' in {base / filename} is {found}, expected "
                                         "uint8 [N, 3072]")
            data.append(array)
            targets.extend(int(v) for v in labels)
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision
        self.targets = targets
        meta = safe_load_pickle(base / cls.meta["filename"], self._name)
        if cls.meta["key"] not in meta:
            raise DatasetLayoutError(f"{self._name}: {base / cls.meta['filename']} lacks {cls.meta['key']!r}")
        self.classes = [str(_text(c)) for c in meta[cls.meta["key"]]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self._validate(root)

    def _validate(self, root: Path) -> None:
        n = len(self.data)
        if len(self.targets) != n:
            raise DatasetLayoutError(f"{self._name}: {root} has {n} images but {len(self.targets)} labels")
        labels = np.asarray(self.targets)
        if n and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DatasetLayoutError(f"{self._name}: labels under {root} fall outside "
                                     f"0..{len(self.classes) - 1} (classes from the meta file)")


class LocalCIFAR10(_LocalCIFARMixin, datasets.CIFAR10):
    """torchvision CIFAR-10 read from ``root`` only, with the safe unpickler; see the module note."""

    _name = "cifar10"


class LocalCIFAR100(_LocalCIFARMixin, datasets.CIFAR100):
    """torchvision CIFAR-100 (fine labels) read from ``root`` only, with the safe unpickler; see the module note."""

    _name = "cifar100"


def load_cifar(name: str, root: str | Path | None, *, train: bool, transform: Callable | None = None,
               verify_md5: bool = False) -> LocalCIFAR10:
    """Build :class:`LocalCIFAR10` or :class:`LocalCIFAR100` from ``name`` ('cifar10' / 'cifar100')."""
    cls = {"cifar10": LocalCIFAR10, "cifar100": LocalCIFAR100}[name]
    return cls(root, train=train, transform=transform, verify_md5=verify_md5)
