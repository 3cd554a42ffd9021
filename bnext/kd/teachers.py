"""KD teachers: a torchvision classification model with local weights, or a workbench checkpoint.

Never downloads: torchvision builders are called with ``weights=None`` and the state dict is
read from a local file with ``torch.load(weights_only=True)`` (a plain state dict, or a dict
holding one under ``state_dict``/``model``; a DDP ``module.`` prefix is stripped).  A file
written by :func:`bnext.models.save` is loaded with :func:`bnext.models.load` instead (``arch``
``None``), so a teacher trained by this workbench (e.g. ``resnet18`` on digits) distils end to end.
Teachers are frozen (``eval()``, no gradients); inputs use the student's normalization.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models import CheckpointError, load, read_checkpoint
from ..models.checkpoint import describe_load_error
from .complexity import TABLE8_ACCURACY, knowledge_complexity

__all__ = ["Teacher", "build_teacher", "classification_builders", "load_state_dict_file"]

WORKBENCH = ("workbench", "checkpoint")


def classification_builders() -> list[str]:
    """Names of torchvision's classification builders (``torchvision.models.list_models``)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local file (``weights_only=True``); see the module docstring for accepted layouts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher weights {path} not found; expected a local state-dict file (.pth/.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - empty, truncated, foreign or unsafe pickle
        raise ValueError(f"teacher weights {path} could not be read ({describe_load_error(e)}); expected a saved "
                         "state dict") from None
    if isinstance(obj, dict) and obj.get("format") == "bnext-checkpoint":
        raise ValueError(f"{path} is a workbench checkpoint: give it with arch: null (loaded by bnext.models.load)")
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"teacher weights {path} do not hold a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


@dataclass
class Teacher:
    """A frozen teacher and what KC needs (params, accuracy as a fraction or None)."""

    name: str
    model: nn.Module
    params: int
    accuracy: float | None

    @property
    def kc(self) -> float | None:
        """Knowledge Complexity (Eq. 3), ``None`` when the accuracy is unknown."""
        return None if self.accuracy is None else knowledge_complexity(self.params, self.accuracy)


def build_teacher(arch: str | None, weights: str | os.PathLike, *, num_classes: int = 1000,
                  accuracy: float | None = None, device: torch.device | str = "cpu",
                  channels_last: bool = False) -> Teacher:
    """Build a frozen teacher.

    Args:
        arch: a torchvision classification builder (``resnet34``, ``efficientnet_b0``,
            ``convnext_tiny``, ...) or ``None``/``"workbench"`` for a workbench checkpoint.
        weights: local file path (never downloaded).
        num_classes: classifier size of a torchvision teacher.
        accuracy: top-1 as a fraction for KC ordering; default Table 8's value for torchvision
            names, the checkpoint's best test top-1 for workbench checkpoints.
    """
    if arch is None or arch in WORKBENCH:
        try:
            model = load(weights)
            extra = read_checkpoint(weights).get("extra", {})
        except CheckpointError as e:
            raise ValueError(f"teacher {weights}: {e}") from None
        name = f"{model.spec['name']}:{Path(weights).name}"
        if accuracy is None and isinstance(extra.get("best_top1"), int | float):
            accuracy = float(extra["best_top1"]) / 100.0
        if model.spec["num_classes"] != num_classes:
            raise ValueError(f"teacher {weights} predicts {model.spec['num_classes']} classes, the student "
                             f"{num_classes}")
    else:
        builders = classification_builders()
        if arch not in builders:
            raise ValueError(f"unknown teacher arch {arch!r}; expected a torchvision classification builder "
                             f"(e.g. {', '.join(TABLE8_ACCURACY)}) or null for a workbench checkpoint")
        from torchvision.models import get_model

        model = get_model(arch, weights=None, num_classes=num_classes)
        state = load_state_dict_file(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"teacher weights {weights} do not fit torchvision {arch} with {num_classes} classes: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        name = arch
        if accuracy is None and arch in TABLE8_ACCURACY:
            accuracy = TABLE8_ACCURACY[arch] / 100.0
    model.eval().requires_grad_(False).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    return Teacher(name, model, params, accuracy)
