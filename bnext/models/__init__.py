"""Model zoo: ``create(name, **kw)``, ``list_models()``, ``save``/``load`` (as in timm).

Registered names: resnet18, binarynet18, xnornet18, bireal18, real2binary18, bnext18,
bnext_t, bnext_s, bnext_m, bnext_l.  ``import_official(path)`` reads the authors' released
BNext checkpoints (``python -m bnext.models import FILE.pth.tar -o out.pt``).

The names below load on first use (PEP 562), with every model family registered first, so
``python -m bnext.models --help`` starts without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, atomic_torch_save, load, read_checkpoint, save
    from .official import OfficialCheckpointError, import_official
    from .registry import create, list_models, model_options, register_model

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "atomic_torch_save": "checkpoint",
    "load": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save": "checkpoint",
    "OfficialCheckpointError": "official",
    "import_official": "official",
    "create": "registry",
    "list_models": "registry",
    "model_options": "registry",
    "register_model": "registry",
}
__all__ = [
    "CheckpointError",
    "OfficialCheckpointError",
    "atomic_torch_save",
    "create",
    "import_official",
    "list_models",
    "load",
    "model_options",
    "read_checkpoint",
    "register_model",
    "save",
]


_SUBMODULES = ("bireal", "bnext", "checkpoint", "common", "official", "registry", "resnet")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # ``bnext.models.resnet`` before anything imported it
        return importlib.import_module(f".{name}", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for family in ("bireal", "bnext", "resnet"):  # register the families
        importlib.import_module(f".{family}", __name__)
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
