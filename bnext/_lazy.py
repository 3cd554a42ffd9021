"""Lazy package exports (PEP 562), so that ``python -m bnext.quant --help`` does not import torch.

``python -m bnext.X`` always imports the package ``bnext.X`` first; a package whose ``__init__``
imports its torch/numba modules makes every ``--help`` pay seconds for them. Such a package lists
its public names instead::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {".apply": ["quantize", "calibrate"], ...})

and ``from bnext.quant import quantize`` imports ``bnext.quant.apply`` on first use, exactly as
before. Submodules (``bnext.quant.spec``) are reachable as attributes, as with eager imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]], *, first: Sequence[str] = ()
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``; ``exports`` maps a relative submodule to its names.

    ``first``: relative submodules imported before any exported name is returned (e.g. the model
    families, which register themselves in the registry on import).
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is not None:
            for early in first:
                importlib.import_module(early, package)
            value = getattr(importlib.import_module(module, package), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
