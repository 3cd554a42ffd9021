"""Checkpoint schema: registry name + options + state dict, loadable with ``weights_only=True``.

Layout (a plain dict saved by ``torch.save``)::

    {"format": "bnext-checkpoint", "version": 1,
     "model": name, "num_classes": int, "input_size": int, "options": {...},
     "state_dict": {...}, "extra": {...}}

Writes are atomic (temp file in the same folder, then ``os.replace``), so a kill during a
save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_open
from .common import input_size_hook
from .registry import create

FORMAT = "bnext-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file is not a readable workbench checkpoint (or not of the expected model)."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file next to ``path``, then rename over it."""
    with atomic_open(path) as f:
        torch.save(obj, f)
    return Path(path)


def save(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Save ``model`` (built by :func:`bnext.models.create`) with its spec; ``extra`` must be plain types/tensors."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CheckpointError(
            "model has no .spec: build it with bnext.models.create(name, ...) so it can be rebuilt on load"
        )
    model = getattr(model, "module", model)  # unwrap DDP
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": spec["name"],
        "num_classes": spec["num_classes"],
        "input_size": spec["input_size"],
        "options": dict(spec["options"]),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint file (``weights_only=True``: no unpickling of code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, foreign or unsafe pickle
        raise CheckpointError(
            f"{path} is not a readable workbench checkpoint ({type(e).__name__}: {str(e).splitlines()[0]}); "
            f"expected a file written by bnext.models.save"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"keys {sorted(ckpt)[:6]}"
        raise CheckpointError(
            f"{path} is not a workbench checkpoint (found {found}); expected a dict with format={FORMAT!r} "
            f"written by bnext.models.save"
        )
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt['version']}; this workbench reads <= {VERSION}")
    return ckpt


def load(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", expected_model: str | None = None
) -> nn.Module:
    """Rebuild the model stored in ``path`` and load its weights (strict).

    The model refuses inputs whose spatial size differs from the checkpoint's ``input_size``
    (a forward pre-hook raising ``ValueError``).
    """
    ckpt = read_checkpoint(path, map_location)
    if expected_model is not None and ckpt["model"] != expected_model:
        raise CheckpointError(f"{path} holds model {ckpt['model']!r}, expected {expected_model!r}")
    model = create(ckpt["model"], num_classes=ckpt["num_classes"], input_size=ckpt["input_size"], **ckpt["options"])
    spec = quant_spec_of(ckpt)
    if spec is not None:  # post-training-quantized model: rebuild its quantized layers first
        from ..quant import quantize

        model = quantize(model, spec, inplace=True)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state dict does not match model {ckpt['model']!r} with options {ckpt['options']}"
            f"{f' quantized as {spec!r}' if spec else ''}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.register_forward_pre_hook(input_size_hook)  # refuse inputs of another size than trained for
    return model


def quant_spec_of(ckpt: dict[str, Any]) -> str | None:
    """The post-training-quantization spec a checkpoint was saved with (``bnext.quant.save`` or a
    ``bnext.train`` run with ``quant.spec`` set), or ``None`` for a float/binary model."""
    extra = ckpt.get("extra") or {}
    return extra.get("quant_spec") or ((extra.get("config") or {}).get("quant") or {}).get("spec")
