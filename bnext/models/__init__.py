"""Model zoo: ``create(name, **kw)``, ``list_models()``, ``save``/``load`` (as in timm).

Registered names: resnet18, binarynet18, xnornet18, bireal18, real2binary18, bnext18,
bnext_t, bnext_s, bnext_m, bnext_l.
"""

from . import bireal, bnext, resnet  # noqa: F401  (register the families)
from .checkpoint import CheckpointError, atomic_torch_save, load, read_checkpoint, save
from .registry import create, list_models, model_options, register_model

__all__ = [
    "CheckpointError",
    "atomic_torch_save",
    "create",
    "list_models",
    "load",
    "model_options",
    "read_checkpoint",
    "register_model",
    "save",
]
