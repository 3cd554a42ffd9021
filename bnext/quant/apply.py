"""Apply an I-S-E-O spec to a model, calibrate activation ranges, save and rebuild quantized models.

Groups (paper Table 7, section 7.5), found by structure, not by name lists:

- I (input): the first ``nn.Conv2d`` inside ``model.stem``;
- S / E: ``.squeeze`` / ``.expand`` of every :class:`~bnext.nn.SqueezeExpand` (BNext Info-RCP
  SE branch, Real-to-Binary's rescale gate);
- O (output): ``model.head.classifier``;
- D (optional 5th group): every other plain ``nn.Conv2d`` / ``nn.Linear`` (downsample projections).

Binary convolutions, BN, PReLU, shifts and recoupling weights are never touched.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.checkpoint import quant_spec_of, register_rebuild_hook
from ..nn import SqueezeExpand
from .layers import QUANT_LAYERS, QuantConv2d, QuantLinear
from .quantizers import ActQuantizer
from .spec import GROUPS, PAPER_SPEC, QuantSpec, parse_spec


def _plain(m: nn.Module) -> bool:
    return type(m) in (nn.Conv2d, nn.Linear)


def find_groups(model: nn.Module) -> dict[str, list[str]]:
    """Module names of each group (see module docstring) of a float model."""
    names = {id(m): n for n, m in model.named_modules()}
    stem = getattr(model, "stem", None)
    first = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None) if stem is not None else None
    if first is None:
        raise ValueError(f"{type(model).__name__} has no model.stem with an nn.Conv2d (the Input layer I); "
                         "expected a model built by bnext.models.create")
    head = getattr(getattr(model, "head", None), "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no model.head.classifier nn.Linear (the Output layer O); "
                         "expected a model built by bnext.models.create")
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    groups["input"].append(names[id(first)])
    groups["output"].append(names[id(head)])
    for m in model.modules():
        if isinstance(m, SqueezeExpand):
            groups["squeeze"].append(names[id(m.squeeze)])
            groups["expand"].append(names[id(m.expand)])
    taken = {n for g in groups.values() for n in g}
    groups["downsample"] = [n for n, m in model.named_modules() if _plain(m) and n not in taken]
    return groups


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[leaf] = new


def quantize(model: nn.Module, spec: str | QuantSpec = PAPER_SPEC, *, inplace: bool = False) -> nn.Module:
    """Fake-quantize the I/S/E/O(/D) groups of ``model`` per ``spec`` (Table 7 notation; ``32/32`` = float).

    Returns the quantized model (a deep copy unless ``inplace``) with ``model.quant_spec`` set to the
    canonical spec string, so ``quantize(create(...), model.quant_spec)`` + ``load_state_dict`` rebuilds
    it.  Layers become :class:`QuantConv2d`/:class:`QuantLinear` sharing the original parameters.
    Models without SE branches (bireal18, binarynet18, xnornet18, resnet18) get a warning and keep S/E
    untouched.  With the default calibrated activation ranges, call :func:`calibrate` (or train) before
    evaluating.
    """
    parsed = parse_spec(spec)
    if getattr(model, "quant_spec", None) is not None:
        raise ValueError(f"model is already quantized with spec {model.quant_spec!r}; quantize the float model")
    groups = find_groups(model)
    if not inplace:
        model = copy.deepcopy(model)
    missing = [g for g in ("squeeze", "expand") if not groups[g] and not parsed.group(g).is_float]
    if missing:
        warnings.warn(f"{type(model).__name__} has no SE branch (SqueezeExpand): groups "
                      f"{'/'.join(g[0].upper() for g in missing)} of spec {str(parsed)!r} are ignored", stacklevel=2)
    for group in GROUPS:
        bits = parsed.group(group)
        if bits.is_float:
            continue
        for name in groups[group]:
            layer = model.get_submodule(name)
            cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
            _set_module(model, name, cls.from_float(
                layer, bits.weight, bits.act, group=group, weight_granularity=parsed.weight_granularity,
                act_granularity=parsed.act_granularity, act_range=parsed.act_range))
    model.quant_spec = str(parsed)
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    """``(name, layer)`` of every quantized layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def group_counts(model: nn.Module) -> dict[str, int]:
    """Number of quantized layers per group (zeros included)."""
    counts = dict.fromkeys(GROUPS, 0)
    for _, m in quantized_layers(model):
        counts[m.quant_group] += 1
    return counts


def _to_device(batch: Any, device: torch.device | str) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x.to(device)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable, *, device: torch.device | str | None = None,
              max_batches: int | None = None) -> int:
    """Set every calibrated activation range to the min/max of its float input over ``batches``.

    ``batches`` yields images or ``(images, labels)``.  The model runs in eval mode (BN uses its
    running statistics); quantized weights are used, activations pass through unquantized while
    observed.  Returns the number of batches seen (0 when nothing needs calibration).
    """
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer) and m.mode == "calibrated"]
    if not quantizers:
        return 0
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    for q in quantizers:
        q.reset()
        q.observing = True
    model.eval()
    n = 0
    try:
        for batch in batches:
            if max_batches is not None and n >= max_batches:
                break
            model(_to_device(batch, device))
            n += 1
    finally:
        for q in quantizers:
            q.observing = False
        model.train(was_training)
    if n == 0:
        raise ValueError("calibrate got no batches; expected an iterable of images or (images, labels)")
    return n


def save(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """:func:`bnext.models.save` with ``extra["quant_spec"]`` so :func:`load` can rebuild the model."""
    from ..models import save as save_model

    spec = getattr(model, "quant_spec", None)
    if spec is None:
        raise ValueError("model has no quant_spec; quantize it with bnext.quant.quantize first")
    return save_model(model, path, quant_spec=spec, **extra)


def rebuild_from_checkpoint(model: nn.Module, ckpt: dict[str, Any]) -> nn.Module | None:
    """:func:`bnext.models.load`'s rebuild hook: quantize ``model`` as the checkpoint's spec says (or None)."""
    spec = quant_spec_of(ckpt)
    return None if spec is None else quantize(model, spec, inplace=True)


register_rebuild_hook(rebuild_from_checkpoint)  # bnext.models.load rebuilds quantized checkpoints from now on


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a checkpoint of :func:`save`, of a quantized ``bnext.train`` run, or a float one.

    Same as :func:`bnext.models.load`, which rebuilds ``quantize(create(...), spec)`` whenever the
    checkpoint carries a spec (``extra["quant_spec"]`` or ``extra["config"]["quant"]["spec"]``).
    """
    from ..models import load as load_model

    return load_model(path, map_location)
