"""Checkpoint schema: registry name + options + state dict, loadable with ``weights_only=True``.

Layout (a plain dict saved by ``torch.save``)::

    {"format": "bnext-checkpoint", "version": 1,
     "model": name, "num_classes": int, "input_size": int, "options": {...},
     "state_dict": {...}, "extra": {...}}

Writes are atomic (temp file in the same folder, then ``os.replace``), so a kill during a
save never leaves a truncated checkpoint behind. Reads use ``torch.load(weights_only=True)``; every
failure (empty, truncated, foreign or unsafe file, options that disagree with the tensors) is a
one-line :class:`CheckpointError` that never suggests ``weights_only=False``.

Post-training-quantized checkpoints are rebuilt by hooks that higher layers register
(:func:`register_rebuild_hook`; ``bnext.quant.apply`` registers one on import), so this module never
imports them.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
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


#: ``hook(model, ckpt) -> model | None``: rebuild what ``create`` alone cannot (None: not mine)
RebuildHook = Callable[[nn.Module, dict[str, Any]], "nn.Module | None"]
_REBUILD_HOOKS: list[RebuildHook] = []


def register_rebuild_hook(hook: RebuildHook) -> None:
    """Let :func:`load` call ``hook(model, ckpt)`` on checkpoints that carry a quantization spec."""
    if hook not in _REBUILD_HOOKS:
        _REBUILD_HOOKS.append(hook)


_TORCH_ADVICE = ("weights_only", "Weights only load failed", "Check the documentation of torch.load",
                 "Please file an issue", "add_safe_globals", "safe_globals")


def describe_load_error(err: BaseException) -> str:
    """One line for a failed ``torch.load(weights_only=True)``: the cause, without torch's advice
    to retry with ``weights_only=False`` (which would run code from the file)."""
    text = str(err).replace("WeightsUnpickler error:", "\n")
    lines = [ln.strip() for ln in text.splitlines()]
    useful = [ln for ln in lines if ln and not any(a in ln for a in _TORCH_ADVICE)]
    detail = useful[0] if useful else ""
    detail = detail.split(" Please use `torch.serialization")[0].split(" This is an internal miniz error")[0]
    if isinstance(err, EOFError) and not detail:
        detail = "the file is empty or ends early"
    unsafe = "Weights only load failed" in str(err)
    kind = "refused by the safe loader (torch.load weights_only=True)" if unsafe else type(err).__name__
    return f"{kind}: {detail or 'no detail'}"


def storage_problem(t: torch.Tensor) -> str | None:
    """Why ``t`` is not a plain view of the bytes the file stored for it, else ``None``.

    A tensor read from a file must be non-overlapping (no stride-0 broadcast, no strides that reuse
    elements) and lie inside its storage: then its shape can ask for no more memory than the file
    holds. A stride-0 view of shape ``(10**12, 256)`` over 256 floats passes a plain shape check and
    makes a model built from it allocate terabytes.
    """
    if t.numel() == 0:
        return None
    dims = sorted((st, n) for n, st in zip(t.shape, t.stride(), strict=True) if n > 1)
    extent = 1  # elements spanned by the faster-varying dimensions
    for stride, n in dims:
        if stride < extent:
            kind = "a broadcast (stride-0)" if stride == 0 else "an overlapping"
            return f"{kind} view: shape {tuple(t.shape)} with strides {tuple(t.stride())}"
        extent = stride * n
    last = t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True))
    have = t.untyped_storage().nbytes()
    if (last + 1) * t.element_size() > have:
        return f"shape {tuple(t.shape)} reaches past its {have}-byte storage"
    return None


def check_tensors(obj: Any, where: str, error: type[Exception] | None = None, _key: str = "") -> None:
    """Every tensor in ``obj`` (nested dicts, lists, tuples) passes :func:`storage_problem`, else
    ``error`` (default :class:`CheckpointError`) naming ``where`` and the tensor's key."""
    error = error or CheckpointError
    if isinstance(obj, torch.Tensor):
        why = storage_problem(obj)
        if why:
            raise error(f"{where}: tensor {_key or '(top level)'} is {why}; expected a dense tensor as "
                        "torch.save writes it (refused before anything is allocated)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_tensors(v, where, error, f"{_key}.{k}" if _key else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            check_tensors(v, where, error, f"{_key}[{i}]")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to memory, then the bytes to a temp file next to ``path``, then rename over it.

    Serializing first keeps torch's writer away from the disk: a full or read-only disk is a plain
    ``OSError`` (:class:`bnext.io.FileWriteError`, one line), never torch's ``unexpected pos`` error.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_open(path) as f:
        f.write(buffer.getbuffer())
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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:  # unreadable: permissions, I/O error
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - empty, truncated, foreign or unsafe pickle
        raise CheckpointError(
            f"{path} is not a readable workbench checkpoint ({describe_load_error(e)}); "
            f"expected a file written by bnext.models.save"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"keys {sorted(ckpt)[:6]}"
        raise CheckpointError(
            f"{path} is not a workbench checkpoint (found {found}); expected a dict with format={FORMAT!r} "
            f"written by bnext.models.save"
        )
    check_tensors(ckpt, str(path))
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')!r}; this workbench reads "
                              f"1..{VERSION}")
    for key, kind in (("model", str), ("num_classes", int), ("input_size", int), ("options", dict),
                      ("state_dict", dict), ("extra", dict)):
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise CheckpointError(f"{path}: field {key!r} is {ckpt.get(key)!r:.60}; expected a {kind.__name__} "
                                  "(a file written by bnext.models.save)")
    return ckpt


def _make(ckpt: dict[str, Any]) -> nn.Module:
    return create(ckpt["model"], num_classes=ckpt["num_classes"], input_size=ckpt["input_size"], **ckpt["options"])


def _build(path: Path, ckpt: dict[str, Any]) -> nn.Module:
    """``create`` from the checkpoint's fields after :func:`check_consistent` (no allocation before it passes)."""
    check_consistent(path, ckpt)
    return _make(ckpt)


def check_consistent(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    """The checkpoint's model and options, built on the ``meta`` device (no memory), have every tensor of
    the stored shape: a tampered ``num_classes`` or options that disagree with the tensors are refused
    (:class:`CheckpointError`). :func:`load` and a training run's ``init_checkpoint`` both check this."""
    try:
        with torch.device("meta"):
            meta = _make(ckpt)
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__  # torch appends C++ frames
        raise CheckpointError(f"{path}: cannot rebuild model {ckpt['model']!r} with options {ckpt['options']}: "
                              f"{first}") from None
    state = ckpt["state_dict"]
    for key, t in meta.state_dict().items():
        stored = state.get(key)
        if stored is None:
            raise CheckpointError(f"{path}: options disagree with the tensors: model {ckpt['model']!r} with "
                                  f"options {ckpt['options']} has {key}, the file does not")
        if not isinstance(stored, torch.Tensor) or tuple(stored.shape) != tuple(t.shape):
            found = tuple(stored.shape) if isinstance(stored, torch.Tensor) else type(stored).__name__
            raise CheckpointError(f"{path}: options disagree with the tensors: {key} is {found} in the file, "
                                  f"{tuple(t.shape)} for model {ckpt['model']!r} with num_classes "
                                  f"{ckpt['num_classes']} and options {ckpt['options']}")
        if _kind(stored.dtype) != _kind(t.dtype):  # int64 weights would load, cast, and answer at chance
            raise CheckpointError(f"{path}: tensor {key} is {str(stored.dtype).removeprefix('torch.')} in the file; "
                                  f"the model's is {str(t.dtype).removeprefix('torch.')}")


def _kind(dtype: torch.dtype) -> str:
    """Floating, complex, bool or integer: a checkpoint may change a tensor's precision, not its kind."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "bool" if dtype == torch.bool else "int"


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
    path = Path(path)
    model = _build(path, ckpt)
    spec = quant_spec_of(ckpt)
    if spec is not None:  # post-training-quantized model: a registered hook rebuilds its quantized layers
        for hook in _REBUILD_HOOKS:
            rebuilt = hook(model, ckpt)
            if rebuilt is not None:
                model = rebuilt
                break
        else:
            raise CheckpointError(f"{path} holds a post-training-quantized model (spec {spec!r}); load it with "
                                  "bnext.quant.load (importing bnext.quant.apply registers the rebuild)")
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches the meta check cannot see (quantizer buffers)
        raise CheckpointError(f"{path}: options disagree with the tensors ({describe_load_error(e)})") from None
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
