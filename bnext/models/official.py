"""Import the authors' released BNext checkpoints (hpi-xnor/BNext) into the workbench zoo.

Their file is a ``torch.save`` of a dict whose ``state_dict`` holds the model's tensors under
``module.`` (saved from DistributedDataParallel), next to the optimizer state and training curves.
:func:`import_official` reads it with ``weights_only=True``, recognizes the family
(BNext-T/S/M/L or BNext-18), size and width from the tensors' names and shapes, maps every tensor
onto the zoo model (``bnext_t`` ... ``bnext18``) and sets each binary layer's ``tau`` from the
stored temperature (below :data:`OFFICIAL_SIGN_THRESHOLD` their weights are pure sign: tau 0).

Name mapping, inside one binary module (their ``Attention`` / ``FFN`` / ``FFN_1`` / ``FFN_2``):

=====================================  =================================================
theirs                                  workbench :class:`~bnext.models.bnext.InfoRCPModule`
=====================================  =================================================
``move.bias``                           ``conv.shift`` (shift before the activation sign)
``binary_conv.weight``                  ``conv.weight`` (latent binary weight)
``binary_conv.temperature``             ``conv.tau`` (0 when below 1e-7)
``norm1.*`` / ``norm2.*``               ``bn.*`` / ``bn_out.*``
``activation2.weight``                  ``act.weight``
``activation1.weight``                  ``shortcut_act.weight`` (ELM modules; unused elsewhere)
``se.se.1.*`` / ``se.se.3.*``           ``se.squeeze.*`` / ``se.expand.*``
``scale``                               ``mix_weight`` (Info-RCP recoupling weight)
``downsample.{1,2}.*``                  ``shortcut.{1,2}.*`` (BNext-18 projection)
=====================================  =================================================

Modules: ``feature.0.{conv1,bn1}`` -> ``stem.{0,1}``; ``feature.i.Attention`` ->
``blocks.{i-1}.spatial``; ``feature.i.FFN`` / ``FFN_1`` / ``FFN_2`` -> ``blocks.{i-1}.pointwise.{0,0,1}``;
BNext-18 ``conv1``/``bn1`` -> ``stem.{0,1}``, ``layer{s}.{j}.Attention`` / ``FFN`` ->
``blocks.{2s+j}.{0,1}``; head ``prelu`` / ``fc`` -> ``head.act`` / ``head.classifier``.
Dropped because their forward never uses them: the stem's ``prelu`` (T/S/M/L), ``activation1``
of the plain modules and every ``binary_activation.temperature`` (activations are always sign in
evaluation).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .bnext import FAMILY
from .checkpoint import CheckpointError, check_tensors, describe_load_error
from .common import scaled
from .registry import create

__all__ = [
    "OFFICIAL_SIGN_THRESHOLD",
    "OfficialCheckpointError",
    "OfficialImport",
    "convert_state_dict",
    "import_official",
    "read_official",
]

#: the authors' weight binarization is pure sign(w) once the temperature is below this
OFFICIAL_SIGN_THRESHOLD = 1e-7
#: BNext-18's base widths (stages 64/128/256/512)
BNEXT18_BASE = 64

#: inside one binary module: their suffix -> ours (``None``: dropped, never used by their forward)
_MODULE_RULES: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(p), r) for p, r in (
        (r"^scale$", "mix_weight"),
        (r"^move\.bias$", "conv.shift"),
        (r"^binary_conv\.weight$", "conv.weight"),
        (r"^binary_conv\.temperature$", "conv.tau"),
        (r"^binary_activation\.temperature$", None),
        (r"^norm1\.(.+)$", r"bn.\1"),
        (r"^norm2\.(.+)$", r"bn_out.\1"),
        (r"^activation2\.weight$", "act.weight"),
        (r"^activation1\.weight$", "shortcut_act.weight"),  # dropped where the module is plain
        (r"^se\.se\.1\.(.+)$", r"se.squeeze.\1"),
        (r"^se\.se\.3\.(.+)$", r"se.expand.\1"),
        (r"^downsample\.(\d+)\.(.+)$", r"shortcut.\1.\2"),
    )
)
_MOBILE_MODULE = re.compile(r"^feature\.(\d+)\.(Attention|FFN|FFN_1|FFN_2)\.(.+)$")
_MOBILE_STEM = re.compile(r"^feature\.0\.(conv1|bn1|prelu)\.(.+)$")
_R18_MODULE = re.compile(r"^layer(\d+)\.(\d+)\.(Attention|FFN)\.(.+)$")
_R18_STEM = re.compile(r"^(conv1|bn1)\.(.+)$")
_HEAD = re.compile(r"^(prelu|fc)\.(.+)$")
_POINTWISE = {"FFN": 0, "FFN_1": 0, "FFN_2": 1}
_HEAD_NAMES = {"prelu": "head.act", "fc": "head.classifier"}


class OfficialCheckpointError(CheckpointError):
    """A file or state dict is not an importable checkpoint of the authors' BNext code."""


@dataclass
class OfficialImport:
    """What :func:`convert_state_dict` found and produced.

    ``model``, ``options``, ``num_classes``, ``input_size``: the zoo model to build; ``state_dict``:
    its tensors (workbench names); ``mapped``: their name -> ours; ``dropped``: their tensors that
    their forward never uses; ``reset``: workbench tensors left at initialization (a new classifier
    when ``num_classes`` differs from the checkpoint's).
    """

    model: str
    options: dict[str, Any]
    num_classes: int
    input_size: int
    state_dict: dict[str, Tensor]
    mapped: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    checkpoint_num_classes: int = 0
    unclamped_mix: list[str] = field(default_factory=list)

    def describe(self) -> str:
        width = self.options.get("width", 1.0)
        return (f"{self.model} (width {width:g}, {self.num_classes} classes, input {self.input_size}): "
                f"{len(self.mapped)} tensors mapped, {len(self.dropped)} unused by their forward dropped"
                + (f", {len(self.reset)} re-initialized (new classifier)" if self.reset else "")
                + (f"; {len(self.unclamped_mix)} recoupling weights outside [0, 1]: clamp_mix=False (as their code)"
                   if self.unclamped_mix else ""))


# -- reading the container --------------------------------------------------------------------------
def read_official(path: str | os.PathLike) -> dict[str, Any]:
    """The authors' container as a dict (``weights_only=True``, tensors memory-mapped when possible).

    Raises :class:`OfficialCheckpointError` for missing, truncated or foreign files.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"official checkpoint {path} does not exist")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) serialization cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or a pickle needing code
        raise OfficialCheckpointError(
            f"{path} is not a readable checkpoint ({describe_load_error(e)}); "
            f"expected the authors' torch.save'd dict with a 'state_dict' (e.g. BNext-T's .pth.tar)"
        ) from None
    if isinstance(obj, dict):  # a stride-0 view of (10**12, 256) would pass the shape checks: terabytes later
        check_tensors(obj.get("state_dict", obj), str(path), OfficialCheckpointError)
    if isinstance(obj, dict) and obj.get("format") == "bnext-checkpoint":
        raise OfficialCheckpointError(f"{path} is already a workbench checkpoint; load it with bnext.models.load")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), Mapping):
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return {"state_dict": obj}  # a bare state dict
    found = f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
    raise OfficialCheckpointError(
        f"{path} holds no model state dict (found {found}); expected the authors' checkpoint: a dict "
        f"with 'state_dict' (and 'epoch', 'optimizer', ...)"
    )


# -- recognizing the model ---------------------------------------------------------------------------
def _strip(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise OfficialCheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key.removeprefix("module.")] = value
    return out


def _shape(sd: Mapping[str, Tensor], key: str, ndim: int | None = None) -> tuple[int, ...]:
    if key not in sd:
        raise OfficialCheckpointError(f"tensor {key!r} is missing; the state dict is incomplete or not BNext's")
    shape = tuple(sd[key].shape)
    if ndim is not None and len(shape) != ndim:
        raise OfficialCheckpointError(f"tensor {key!r} has shape {list(shape)}; expected {ndim} dimensions")
    return shape


def _mobile_stages(sd: Mapping[str, Tensor]) -> tuple[int, ...]:
    """Blocks per stage: a stage starts at each block that doubles the width (has ``FFN_1``)."""
    blocks = sorted({int(m.group(1)) for k in sd if (m := _MOBILE_MODULE.match(k))})
    if not blocks or blocks != list(range(1, len(blocks) + 1)):
        raise OfficialCheckpointError(f"feature blocks are not numbered 1..n (found {blocks[:8]}...)")
    starts = [i for i in blocks if f"feature.{i}.FFN_1.binary_conv.weight" in sd]
    if not starts or starts[0] != 1:
        raise OfficialCheckpointError("feature.1 does not double the width (no feature.1.FFN_1); not BNext-T/S/M/L")
    bounds = [*starts, blocks[-1] + 1]
    return tuple(b - a for a, b in zip(bounds, bounds[1:], strict=False))


def _pick_width(candidates: list[tuple[str, float]]) -> tuple[str, float] | None:
    """Width 1 first, then a width that is a multiple of 1/16, else ambiguous (None)."""
    for ok in (lambda w: w == 1.0, lambda w: (w * 16).is_integer()):
        good = [c for c in candidates if ok(c[1])]
        if len(good) == 1:
            return good[0]
    return candidates[0] if len(candidates) == 1 else None


def _recognize(sd: Mapping[str, Tensor], name: str | None) -> tuple[str, float, int, int]:
    """``(model name, width, checkpoint classes, the input size their stem stride corresponds to)``."""
    num_classes = _shape(sd, "fc.weight", 2)[0]
    if any(k.startswith("feature.") for k in sd):
        stem = _shape(sd, "feature.0.conv1.weight", 4)[0]
        stages = _mobile_stages(sd)
        candidates = [(n, stem / base) for n, (base, blocks) in FAMILY.items()
                      if blocks == stages and scaled(base, stem / base) == stem]
        if name is not None:
            candidates = [c for c in candidates if c[0] == name]
            if not candidates:
                raise OfficialCheckpointError(
                    f"the checkpoint is not {name!r}: it has blocks per stage {stages} and a {stem}-channel stem; "
                    f"{name!r} has {FAMILY[name][1] if name in FAMILY else 'another structure'}")
        picked = _pick_width(candidates)
        if picked is None:
            what = ", ".join(f"{n} width {w:g}" for n, w in candidates) or "none of bnext_t/s/m/l"
            raise OfficialCheckpointError(
                f"blocks per stage {stages} with a {stem}-channel stem match {what}; pass name= (--name)")
        # their stem is stride 2 exactly when num_classes == 1000; ours when input_size > 64
        return picked[0], picked[1], num_classes, 224 if num_classes == 1000 else 32
    if any(k.startswith("layer") for k in sd):
        if name not in (None, "bnext18"):
            raise OfficialCheckpointError(f"the checkpoint is BNext-18 (layer*.* names), not {name!r}")
        shape = _shape(sd, "conv1.weight", 4)
        width = shape[0] / BNEXT18_BASE
        return "bnext18", width, num_classes, 224 if shape[-1] == 7 else 32
    raise OfficialCheckpointError(
        f"unrecognized state dict (first keys {list(sd)[:4]}); expected the authors' BNext-T/S/M/L "
        f"(feature.*) or BNext-18 (conv1, layer*.*)")


# -- mapping ---------------------------------------------------------------------------------------
def _module_target(prefix: str, rest: str) -> str | None:
    for pattern, repl in _MODULE_RULES:
        if pattern.match(rest):
            return None if repl is None else prefix + pattern.sub(repl, rest)
    raise KeyError(rest)


def _target(key: str, family: str) -> str | None:
    """Our name for their ``key`` (``None``: dropped); ``KeyError`` when no rule places it."""
    if m := _HEAD.match(key):
        return f"{_HEAD_NAMES[m.group(1)]}.{m.group(2)}"
    if family == "bnext18":
        if m := _R18_STEM.match(key):
            return f"stem.{0 if m.group(1) == 'conv1' else 1}.{m.group(2)}"
        if m := _R18_MODULE.match(key):
            block = 2 * int(m.group(1)) + int(m.group(2))
            return _module_target(f"blocks.{block}.{0 if m.group(3) == 'Attention' else 1}.", m.group(4))
        raise KeyError(key)
    if m := _MOBILE_STEM.match(key):
        if m.group(1) == "prelu":
            return None  # defined, never called by their forward
        return f"stem.{0 if m.group(1) == 'conv1' else 1}.{m.group(2)}"
    if m := _MOBILE_MODULE.match(key):
        block = int(m.group(1)) - 1
        part = "spatial" if m.group(2) == "Attention" else f"pointwise.{_POINTWISE[m.group(2)]}"
        return _module_target(f"blocks.{block}.{part}.", m.group(3))
    raise KeyError(key)


def convert_state_dict(state_dict: Mapping[str, Tensor], *, name: str | None = None, num_classes: int | None = None,
                       input_size: int | None = None, sign_zero: int = 1) -> OfficialImport:
    """Map the authors' state dict (``module.`` prefix optional) onto a zoo model; no model weights allocated.

    Args:
        name: ``bnext_t``/``bnext_s``/``bnext_m``/``bnext_l``/``bnext18``; ``None`` recognizes it.
        num_classes: ``None`` keeps the checkpoint's; another count gets a new (re-initialized)
            classifier, as timm's ``num_classes`` (fine-tuning on another data set).
        input_size: ``None``: 224 if their stem is strided (1000 classes, or BNext-18's 7x7 stem), else 32.
        sign_zero: the binary layers' sign(0): 1 (paper Eq. 1, packable) or 0 (their ``torch.sign``).

    Raises :class:`OfficialCheckpointError` naming the first tensor it cannot place or whose shape
    disagrees, or the first workbench tensor left without a value.
    """
    sd = _strip(state_dict)
    family, width, ckpt_classes, default_size = _recognize(sd, name)
    classes = ckpt_classes if num_classes is None else int(num_classes)
    size = default_size if input_size is None else int(input_size)
    options = {"width": width, "sign_zero": int(sign_zero)}
    with torch.device("meta"):  # names and shapes only, no memory
        target = create(family, num_classes=classes, input_size=size, **options).state_dict()
    where = f"{family} (width {width:g}, {classes} classes, input {size})"
    out: dict[str, Tensor] = {}
    result = OfficialImport(family, dict(target_options(family, options)), classes, size, out,
                            checkpoint_num_classes=ckpt_classes)
    for key, value in sd.items():
        try:
            ours = _target(key, family)
        except KeyError:
            raise OfficialCheckpointError(f"cannot place tensor {key!r} (shape {list(value.shape)}) in {where}: "
                                          f"no workbench counterpart") from None
        if ours is not None and ours not in target and key.endswith("activation1.weight"):
            ours = None  # the PReLU of a plain module: defined, never called by their forward
        if ours is None:
            result.dropped.append(key)
            continue
        if ours.startswith("head.classifier.") and classes != ckpt_classes:
            result.dropped.append(key)
            continue
        if ours not in target:
            raise OfficialCheckpointError(f"cannot place tensor {key!r} (shape {list(value.shape)}) in {where}: "
                                          f"{ours!r} does not exist there")
        if ours.endswith(".tau"):
            if value.numel() != 1:
                raise OfficialCheckpointError(f"tensor {key!r} has shape {list(value.shape)}; expected one "
                                              f"temperature (shape [1])")
            t = float(value.reshape(()))
            value = torch.tensor(0.0 if t < OFFICIAL_SIGN_THRESHOLD else t)
        elif tuple(value.shape) != tuple(target[ours].shape):
            raise OfficialCheckpointError(f"tensor {key!r} has shape {list(value.shape)} but {where} expects "
                                          f"{list(target[ours].shape)} at {ours!r}")
        if ours in out:
            raise OfficialCheckpointError(f"tensor {key!r} maps to {ours!r}, which another tensor already set")
        out[ours] = value
        result.mapped[key] = ours
    result.reset = [k for k in target if k not in out and k.startswith("head.classifier.") and classes != ckpt_classes]
    unset = [k for k in target if k not in out and k not in result.reset]
    if unset:
        raise OfficialCheckpointError(f"the checkpoint has no tensor for {unset[0]!r} of {where} "
                                      f"({len(unset)} missing); the file is incomplete or of another model")
    # their recoupling weight is not clamped to [0, 1]: keep their function where it matters
    result.unclamped_mix = [k for k in out if k.endswith(".mix_weight") and bool(((out[k] < 0) | (out[k] > 1)).any())]
    if result.unclamped_mix:
        result.options["clamp_mix"] = False
    return result


def target_options(family: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options recorded for the imported model (the registry's defaults plus ``options``)."""
    from .registry import model_options

    resolved = {k: v for k, v in model_options(family).items() if k not in ("num_classes", "input_size")}
    resolved.update(options)
    return resolved


def import_official(path: str | os.PathLike, *, name: str | None = None, num_classes: int | None = None,
                    input_size: int | None = None, sign_zero: int = 1) -> nn.Module:
    """Build the zoo model of one of the authors' released BNext checkpoints, in evaluation mode.

    Reads ``path`` (``weights_only=True``; the optimizer state and training curves are ignored),
    recognizes BNext-T/S/M/L or BNext-18 and its width, maps every tensor (see the module
    docstring and :func:`convert_state_dict` for the arguments) and sets each binary layer's
    ``tau``. Where a recoupling weight lies outside [0, 1] the model gets ``clamp_mix=False``
    (their forward does not clamp it). The result has ``.spec`` (save it with :func:`bnext.models.save`) and
    ``.official`` (:class:`OfficialImport` without the tensors).
    """
    container = read_official(path)
    try:
        conv = convert_state_dict(container["state_dict"], name=name, num_classes=num_classes,
                                  input_size=input_size, sign_zero=sign_zero)
    except OfficialCheckpointError as e:
        raise OfficialCheckpointError(f"{path}: {e}") from None
    model = create(conv.model, num_classes=conv.num_classes, input_size=conv.input_size,
                   **{k: conv.options[k] for k in ("width", "sign_zero", "clamp_mix")})
    missing, unexpected = model.load_state_dict(conv.state_dict, strict=False)
    if unexpected or sorted(missing) != sorted(conv.reset):  # convert_state_dict checked this already
        raise OfficialCheckpointError(f"{path}: state dict does not fit {conv.model}: missing {missing[:4]}, "
                                      f"unexpected {unexpected[:4]}")
    conv.state_dict = {}
    model.official = conv
    return model.eval()
