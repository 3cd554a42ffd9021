"""Fixtures that write tiny datasets in the real on-disk formats (CIFAR pickles, class-folder trees)."""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 ``str`` (BINSTRING opcodes), as in the real CIFAR files (pickled by Python 2).

    Loaded with ``encoding='latin1'`` (torchvision) the keys become ``'data'``; with ``encoding='bytes'``
    (the CIFAR website's snippet) they are ``b'data'``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _batch(rng: np.random.Generator, n: int, num_classes: int, label_key: bytes) -> dict:
    labels = [int(v) for v in rng.integers(0, num_classes, n)]
    batch = {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
        label_key: labels,
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v % 20 for v in labels]
    return batch


@pytest.fixture
def make_cifar(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, list[dict]]]]:
    """``make_cifar(name, n_train=4, n_test=6)`` writes a fake CIFAR folder; returns (root, batches)."""

    def make(name: str = "cifar10", n_train: int = 4, n_test: int = 6) -> tuple[Path, dict[str, list[dict]]]:
        rng = np.random.default_rng(0)
        root = tmp_path / name
        if name == "cifar10":
            base = root / "cifar-10-batches-py"
            base.mkdir(parents=True)
            train = [_batch(rng, n_train, 10, b"labels") for _ in range(5)]
            test = [_batch(rng, n_test, 10, b"labels")]
            for i, b in enumerate(train, 1):
                dump_py2(b, base / f"data_batch_{i}")
            dump_py2(test[0], base / "test_batch")
            names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                     b"ship", b"truck"]
            dump_py2({b"label_names": names, b"num_cases_per_batch": n_train, b"num_vis": 3072},
                     base / "batches.meta")
        else:
            base = root / "cifar-100-python"
            base.mkdir(parents=True)
            train = [_batch(rng, 5 * n_train, 100, b"fine_labels")]
            test = [_batch(rng, n_test, 100, b"fine_labels")]
            dump_py2(train[0], base / "train")
            dump_py2(test[0], base / "test")
            dump_py2({b"fine_label_names": [b"class_%d" % i for i in range(100)],
                      b"coarse_label_names": [b"super_%d" % i for i in range(20)]}, base / "meta")
        return root, {"train": train, "test": test}

    return make


@pytest.fixture
def make_image_tree(tmp_path: Path) -> Callable[..., Path]:
    """``make_image_tree(train={'cat': 3}, val={'cat': 2})`` writes real PNG/JPEG files; returns the root."""

    def make(train: dict[str, int] | None = None, val: dict[str, int] | None = None) -> Path:
        rng = np.random.default_rng(0)
        root = tmp_path / "imagenet"
        for split, counts in (("train", train), ("val", val)):
            if counts is None:
                continue
            (root / split).mkdir(parents=True, exist_ok=True)
            for cls, n in counts.items():
                folder = root / split / cls
                folder.mkdir()
                for i in range(n):
                    h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
                    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                    ext, fmt = ("JPEG", "JPEG") if i % 2 == 0 else ("png", "PNG")
                    Image.fromarray(pixels).save(folder / f"{cls}_{i}.{ext}", format=fmt)
        return root

    return make
