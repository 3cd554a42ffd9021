"""Your own model and data on the command line: ``--model pkg.module:build --data pkg.module:loaders``.

A value with ``:`` names an importable callable (``package.module:attribute`` on ``sys.path``, the
current folder included, or ``path/to/file.py:attribute``):

* the model callable is called with the ``--model-option KEY=VALUE`` pairs as keyword arguments
  (after ``torch.manual_seed(--init-seed)``) and returns an ``nn.Module``;
* the data callable is called without arguments and returns ``{split: (inputs, targets)}``,
  ``{split: DataLoader}``, one ``(inputs, targets)`` pair or one ``DataLoader`` (iterating
  ``(inputs, targets)`` batches); a single set serves the first requested split.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn


def is_import_path(value: str | None) -> bool:
    """Whether a ``--model``/``--data`` value names a callable (``module:attr``) rather than a registry name."""
    return bool(value) and ":" in value  # type: ignore[operator]


def import_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` or ``path/file.py:attr``; raises ValueError with a clear message."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"{what} {spec!r} must be 'package.module:callable' or 'path/file.py:callable'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise FileNotFoundError(f"{what} {spec!r}: no file {path}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
            sys.modules.setdefault(path.stem, module)
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as exc:
        raise ValueError(f"{what} {spec!r}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


def build_user_model(spec: str, options: Mapping[str, Any], seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Call the model callable (seeded) and describe it for the surface settings."""
    import torch
    from torch import nn

    fn = import_callable(spec, "--model")
    torch.manual_seed(seed)
    model = fn(**dict(options))
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} returned {type(model).__name__}, expected a torch.nn.Module")
    meta = {"callable": spec, "class": type(model).__name__, "options": dict(options)}
    return model, meta


def _tensors(obj: Any, where: str) -> tuple[Tensor, Tensor]:
    import torch

    if isinstance(obj, tuple | list) and len(obj) == 2 and all(torch.is_tensor(t) for t in obj):
        return obj[0], obj[1]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | Mapping):
        xs, ys = [], []
        for batch in obj:
            if not (isinstance(batch, tuple | list) and len(batch) >= 2):
                raise ValueError(f"{where}: batches must be (inputs, targets), got {type(batch).__name__}")
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            raise ValueError(f"{where}: the DataLoader yielded no batch")
        return torch.cat(xs), torch.cat(ys)
    raise ValueError(f"{where}: expected (inputs, targets) tensors or a DataLoader, got {type(obj).__name__}")


def load_user_data(spec: str, splits: Sequence[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """Every split the data callable returns, as ``(inputs, targets)`` tensors (``splits`` checked)."""
    fn = import_callable(spec, "--data")
    obj = fn()
    if isinstance(obj, Mapping):
        sets = {str(k): _tensors(v, f"--data {spec!r} split {k!r}") for k, v in obj.items()}
        missing = [s for s in splits if s not in sets]
        if missing:
            raise ValueError(
                f"--data {spec!r} has splits {sorted(sets)}; requested {missing} (choose with --splits)"
            )
        return sets
    if len(splits) != 1:
        raise ValueError(
            f"--data {spec!r} returned one data set but --splits asks for {list(splits)}; return "
            "{split: (inputs, targets)} for several splits"
        )
    return {splits[0]: _tensors(obj, f"--data {spec!r}")}
