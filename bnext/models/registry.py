"""Model registry (as in timm): ``register_model``, ``create``, ``list_models``.

A factory is a function ``fn(*, num_classes, input_size, **options) -> nn.Module``.
``create`` records what built the model in ``model.spec`` (plain types), which
:func:`bnext.models.save` stores so that :func:`bnext.models.load` can rebuild it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model factory under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_options(name: str) -> dict[str, Any]:
    """The options a model accepts with their defaults (``num_classes`` and ``input_size`` included)."""
    fn = _factory(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None


def create(name: str, *, num_classes: int = 1000, input_size: int = 224, **options: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs.
        input_size: input resolution; ``<= 64`` selects the 32x32 stem, larger the ImageNet stem.
        **options: model options (e.g. ``width``, ``info_rcp``, ``elm_attention``).
    """
    fn = _factory(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = sorted(k for k in accepted if k not in ("num_classes", "input_size"))
        raise ValueError(f"model {name!r} got unknown option(s) {unknown}; accepted options: {valid}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = fn(num_classes=int(num_classes), input_size=int(input_size), **options)
    resolved = {k: v for k, v in accepted.items() if k not in ("num_classes", "input_size")}
    resolved.update(options)
    model.spec = {
        "name": name,
        "num_classes": int(num_classes),
        "input_size": int(input_size),
        "options": resolved,
    }
    return model
