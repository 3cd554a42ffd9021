"""Model zoo: ``create(name, **kw)``, ``list_models()``, ``save``/``load`` (as in timm).

Registered names: resnet18, binarynet18, xnornet18, bireal18, real2binary18, bnext18,
bnext_t, bnext_s, bnext_m, bnext_l.  ``import_official(path)`` reads the authors' released
BNext checkpoints (``python -m bnext.models import FILE.pth.tar -o out.pt``).

The names below load on first use (PEP 562), with every model family registered first, so
``python -m bnext.models --help`` starts without torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        ".checkpoint": ["CheckpointError", "atomic_torch_save", "load", "read_checkpoint", "save"],
        ".official": ["OfficialCheckpointError", "import_official"],
        ".registry": ["create", "list_models", "model_options", "register_model"],
    },
    first=(".bireal", ".bnext", ".resnet"),  # the families register themselves on import
)
