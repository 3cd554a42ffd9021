"""Model zoo: ``create(name, **kw)``, ``list_models()``, ``save``/``load`` (as in timm).

Registered names: resnet18, binarynet18, xnornet18, bireal18, real2binary18, bnext18,
bnext_t, bnext_s, bnext_m, bnext_l.  ``import_official(path)`` reads the authors' released
BNext checkpoints (``python -m bnext.models import FILE.pth.tar -o out.pt``).
"""

from . import bireal, bnext, resnet  # noqa: F401  (register the families)
from .checkpoint import CheckpointError, atomic_torch_save, load, read_checkpoint, save
from .official import OfficialCheckpointError, import_official
from .registry import create, list_models, model_options, register_model

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
