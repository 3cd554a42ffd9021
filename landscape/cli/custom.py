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
    except Exception as exc:  # noqa: BLE001 - a syntax error or a failing top level in the user's module
        raise ValueError(f"{what} {spec!r}: importing {module_name!r} failed ({_one_line(exc)})") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (a user's exception, reported without its traceback)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def call_user(fn: Callable[..., Any], spec: str, what: str, **kwargs: Any) -> Any:
    """``fn(**kwargs)``; an exception it raises becomes a one-line ValueError naming the callable."""
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        raise ValueError(f"{what} {spec!r} raised {_one_line(exc)}") from None


def build_user_model(spec: str, options: Mapping[str, Any], seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Call the model callable (seeded) and describe it for the surface settings."""
    import torch
    from torch import nn

    fn = import_callable(spec, "--model")
    torch.manual_seed(seed)
    model = call_user(fn, spec, "--model", **dict(options))
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
    obj = call_user(fn, spec, "--data")
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


def check_one_batch(model: nn.Module, data: Mapping[str, tuple[Tensor, Tensor]], *, class_targets: bool = True,
                    where: str = "--data") -> None:
    """Run ``model`` on two examples of every split before any file is written; raise a one-line ValueError
    when the inputs do not fit the model, the output is not ``(N, classes)``, or (``class_targets``, the
    default cross-entropy) the targets are not integer class indices ``0..classes-1`` (every target checked)."""
    import torch

    for split, (x, y) in data.items():
        name = f"{where} split {split!r}"
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} inputs but {y.shape[0]} targets")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: no examples")
        try:
            with torch.no_grad():
                out = model(x[:2])
        except Exception as exc:  # noqa: BLE001 - a shape mismatch surfaces as assorted errors
            raise ValueError(f"{name}: the model cannot take inputs of shape {tuple(x.shape[1:])} "
                             f"({_one_line(exc)})") from None
        if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != min(2, x.shape[0]):
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"{name}: the model returned {got} for {min(2, x.shape[0])} inputs, expected "
                             "(inputs, classes) logits")
        if not class_targets:
            continue
        classes = int(out.shape[1])
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool or y.ndim != 1:
            raise ValueError(f"{name}: targets are {str(y.dtype).replace('torch.', '')} of shape {tuple(y.shape)}; "
                             f"cross-entropy needs integer class indices 0..{classes - 1} of shape (N,) "
                             "(float targets need a loss that takes them)")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ValueError(f"{name}: targets range over {low}..{high} but the model has {classes} classes "
                             f"(expected 0..{classes - 1})")
