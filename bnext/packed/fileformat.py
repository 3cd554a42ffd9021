"""The packed model file (``.bnx``): schema, writer and validating reader.

Container: an uncompressed NumPy ``.npz`` (a zip of ``.npy`` arrays), read with
``allow_pickle=False`` — no pickle anywhere.  Entries:

- ``__header__``: uint8, UTF-8 JSON (see below).
- ``binary/<layer>``: uint8, the layer's weight signs, 1 bit per weight (bit set = -1),
  ``numpy.packbits(bitorder="little")`` of the ``(O, I, k, k)`` array in C order.
- ``alpha/<layer>``: float32 ``(O,)``, only for scaled layers (XNOR-Net, Bi-Real).
- ``quant/<module>.q``: uint8, the quantized weight codes ``q`` packed at ``bits`` bits
  each (LSB first, little bit order) in C order of the weight shape;
  ``quant/<module>.scale`` / ``.offset``: float32 ``(C_out,)``; weight = q * scale + offset.
- ``state/<key>``: every other tensor of the model's state dict (parameters and buffers,
  float32 as trained; BN running statistics included), except the latent binary weights,
  their ``tau`` and ``num_batches_tracked``.

Header::

    {"format": "bnext-packed", "version": 1,
     "spec": {"name", "num_classes", "input_size", "options"},   # bnext.models.create arguments
     "quant_spec": "8/8-4/8-4/8-8/8" | null,
     "layers": [{"name", "in_channels", "out_channels", "kernel_size", "stride", "padding",
                 "scale", "shift"}],                                # one per binary conv
     "quantized": [{"name", "bits", "shape"}],
     "bytes": {"binary", "quant", "real"}}                         # payload sizes

``load`` rebuilds the model with ``bnext.models.create(**spec)`` (then
``bnext.quant.quantize(model, quant_spec)`` if quantized), loads ``state/*`` strictly,
sets the dequantized weights ``q * scale + offset`` (and, for ``bnext.quant`` layers, a
weight quantizer that keeps them: Eq. 6 applied again to a dequantized weight would not
give the same codes), and installs the 1-bit layers.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import atomic_open
from ..nn import BinaryConv2d
from .bits import pack_flat_bits, pack_uint, unpack_flat_bits, unpack_uint
from .layers import PackedBinaryConv2d, PackingError
from .model import DEFAULT_THREADS, PackedModel, _set_submodule, replace_real_modules
from .schema import (
    FORMAT,
    HEADER,
    VERSION,
    PackedFormatError,
    check_arrays,
    check_model_tensors,
    expected,
    parse_header,
    read_npz,
)


# -- quantized-layer hook (bnext.quant) -------------------------------------------------
def quantized_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that export quantized weights (``bnext.quant`` layers: ``export_quantized_weight()``)."""
    return [(n, m) for n, m in model.named_modules() if callable(getattr(m, "export_quantized_weight", None))]


class FrozenQuantizedWeight(nn.Module):
    """Weight quantizer of a loaded quantized layer: the weight already holds ``q * scale + offset``.

    Re-quantizing a dequantized weight with Eq. 6 is not idempotent (the per-channel abs-mean
    changes), so a loaded layer uses its stored codes exactly: this module passes the weight
    through and keeps the codes (plain attributes, not state) for :func:`save`.
    """

    def __init__(self, q: torch.Tensor, bits: int, scale: torch.Tensor, offset: torch.Tensor,
                 granularity: str = "tensor") -> None:
        super().__init__()
        self.bits = int(bits)
        self.granularity = granularity  # what bnext.quant's layers read from their quantizer
        self.codes = {"q": q, "bits": int(bits), "scale": scale, "offset": offset}

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def export(self) -> dict:
        return dict(self.codes)


def quantized_codes(module: nn.Module) -> dict:
    """``dict(q, bits, scale, offset)`` of a quantized layer: the stored codes of a loaded one, else its export."""
    frozen = getattr(module, "weight_quantizer", None)
    return frozen.export() if isinstance(frozen, FrozenQuantizedWeight) else module.export_quantized_weight()


def _requantize(model: nn.Module, quant_spec: str, path: Path | None = None) -> nn.Module:
    """Apply ``bnext.quant.quantize(model, quant_spec)`` (imported lazily: the package is optional)."""
    where = f"{path}: " if path else ""
    try:
        from .. import quant
    except ImportError as e:  # pragma: no cover - depends on the other package being present
        raise PackedFormatError(f"{where}the file holds a quantized model ({quant_spec!r}) but bnext.quant is not "
                                f"available: {e}") from None
    try:
        return quant.quantize(model, quant_spec)
    except Exception as e:  # noqa: BLE001 - a tampered spec fails in assorted ways
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PackedFormatError(f"{where}header field 'quant_spec' {quant_spec!r} cannot be applied "
                                f"({detail})") from None


# -- writer ---------------------------------------------------------------------------
def _excluded_state_keys(model: nn.Module, quantized: list[str]) -> set[str]:
    out = set()
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, (BinaryConv2d, PackedBinaryConv2d)):
            out.update({f"{prefix}weight", f"{prefix}tau", f"{prefix}shift"})
        if name in quantized:
            out.add(f"{prefix}weight")
    return out


def _arrays(packed: PackedModel) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    layers = []
    n_binary = n_quant = n_real = 0
    for name, layer in packed.packed_layers():
        meta = {"name": name, **layer.metadata()}
        layers.append(meta)
        arrays[f"binary/{name}"] = pack_flat_bits(layer.signs)
        n_binary += arrays[f"binary/{name}"].nbytes
        if layer.alpha is not None:
            arrays[f"alpha/{name}"] = layer.alpha
            n_real += layer.alpha.nbytes
        if layer.shift is not None:
            arrays[f"state/{name}.shift"] = layer.shift.reshape(1, -1, 1, 1)
            n_real += layer.shift.nbytes
    quantized = []
    for name, m in quantized_modules(packed.model):
        export = quantized_codes(m)
        bits = int(export["bits"])
        q = export["q"].detach().cpu().numpy()
        arrays[f"quant/{name}.q"] = pack_uint(q, bits)
        arrays[f"quant/{name}.scale"] = export["scale"].detach().cpu().float().numpy().reshape(-1)
        arrays[f"quant/{name}.offset"] = export["offset"].detach().cpu().float().numpy().reshape(-1)
        quantized.append({"name": name, "bits": bits, "shape": list(q.shape)})
        n_quant += sum(arrays[f"quant/{name}.{k}"].nbytes for k in ("q", "scale", "offset"))
    excluded = _excluded_state_keys(packed.model, [q["name"] for q in quantized])
    for key, value in packed.model.state_dict().items():
        if key in excluded or key.endswith("num_batches_tracked"):
            continue
        arr = value.detach().cpu().numpy()
        arrays[f"state/{key}"] = arr
        n_real += arr.nbytes
    header = {
        "format": FORMAT,
        "version": VERSION,
        "spec": packed.spec,
        "quant_spec": packed.quant_spec,
        "layers": layers,
        "quantized": quantized,
        "bytes": {"binary": n_binary, "quant": n_quant, "real": n_real},
    }
    return header, arrays


def save(packed: PackedModel, path: str | os.PathLike) -> Path:
    """Write ``packed`` to ``path`` (atomic: temp file then rename); returns the path."""
    if not isinstance(packed, PackedModel):
        raise TypeError(f"save expects a PackedModel (from bnext.packed.pack), got {type(packed).__name__}")
    header, arrays = _arrays(packed)
    blob = np.frombuffer(json.dumps(header, separators=(",", ":")).encode(), dtype=np.uint8)
    with atomic_open(path) as f:
        np.savez(f, **{HEADER: blob}, **arrays)
    return Path(path)


# -- reader ---------------------------------------------------------------------------
def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate a ``.bnx`` file: ``(header, arrays)``; raises :class:`PackedFormatError`.

    The container, every header field and every array against the header are checked
    (:mod:`bnext.packed.schema`) before anything is returned.
    """
    path = Path(path)
    if not path.is_file():
        raise PackedFormatError(f"{path} does not exist; expected {expected()}")
    try:
        arrays = read_npz(path)
    except PackedFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        raise PackedFormatError(f"{path} is not a readable packed model ({type(e).__name__}: {detail}); "
                                f"expected {expected()}") from None
    header = parse_header(path, arrays)
    check_arrays(path, header, arrays)
    return header, arrays


def _create(path: Path, spec: dict[str, Any], device: str | None = None) -> nn.Module:
    from .. import models

    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return models.create(spec["name"], num_classes=spec["num_classes"], input_size=spec["input_size"],
                                 **spec["options"])
    except Exception as e:  # noqa: BLE001 - tampered options fail in assorted ways (ValueError, OverflowError, ...)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PackedFormatError(f"{path}: header field 'spec' cannot rebuild a model ({spec}): {detail}") from None


def validate(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Everything :func:`load` checks before it allocates: the container, the header, the arrays, the
    model the header describes (built on the ``meta`` device) against them, dtypes included, and the
    ``quant_spec``. Returns ``(header, arrays)``; raises :class:`PackedFormatError`."""
    path = Path(path)
    header, arrays = read(path)
    meta = _create(path, header["spec"], "meta")
    check_model_tensors(path, header, arrays, meta)  # no allocation before this passes
    if header.get("quant_spec"):
        with torch.device("meta"):
            _requantize(meta, header["quant_spec"], path)
    return header, arrays


def load(path: str | os.PathLike, *, threads: int = DEFAULT_THREADS) -> PackedModel:
    """Rebuild the packed model stored in ``path`` (see module docstring)."""
    path = Path(path)
    header, arrays = validate(path)
    spec = header["spec"]
    model = _create(path, spec)
    if header.get("quant_spec"):
        model = _requantize(model, header["quant_spec"], path)
    model.eval()
    model.requires_grad_(False)
    binary = dict(_binary_modules(model))
    names = [layer["name"] for layer in header["layers"]]
    if sorted(names) != sorted(binary):
        raise PackedFormatError(f"{path}: binary layers in the file do not match model {spec['name']!r}: "
                                f"{sorted(set(names) ^ set(binary))[:5]}")
    # real-valued state (strict on everything we store)
    state = {k[len("state/"):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("state/")}
    quantized = {q["name"]: q for q in header["quantized"]}
    expected = set(model.state_dict()) - _excluded_state_keys(model, list(quantized))
    expected = {k for k in expected if not k.endswith("num_batches_tracked")}
    shifts = {k for k in state if k.rpartition(".")[0] in binary and k.endswith(".shift")}
    missing, unexpected = expected - set(state), set(state) - expected - shifts
    if missing or unexpected:
        raise PackedFormatError(
            f"{path}: stored tensors do not match model {spec['name']!r} with options {spec['options']}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model_state = model.state_dict()
    with torch.no_grad():
        for key in expected:
            if tuple(model_state[key].shape) != tuple(state[key].shape):
                raise PackedFormatError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                                        f"expected {tuple(model_state[key].shape)}")
            if model_state[key].dtype != state[key].dtype:
                raise PackedFormatError(f"{path}: array state/{key} is {str(state[key].dtype).removeprefix('torch.')}"
                                        f"; the model's tensor is {str(model_state[key].dtype).removeprefix('torch.')}")
            model_state[key].copy_(state[key])
        for name, meta in quantized.items():
            _load_quantized(path, model, name, meta, arrays)
    for layer_meta in header["layers"]:
        name = layer_meta["name"]
        src = binary[name]
        packed_layer = PackedBinaryConv2d(src.in_channels, src.out_channels, src.kernel_size, src.stride,
                                          src.padding, src.scale)
        if _geometry(packed_layer) != _geometry_meta(layer_meta):
            raise PackedFormatError(f"{path}: layer {name!r} in the file is {_geometry_meta(layer_meta)}, "
                                    f"the rebuilt model has {_geometry(packed_layer)}")
        o, i, k = src.out_channels, src.in_channels, src.kernel_size
        bits = arrays[f"binary/{name}"]
        if bits.dtype != np.uint8 or bits.size != (o * i * k * k + 7) // 8:
            raise PackedFormatError(f"{path}: binary/{name} has {bits.size} bytes, expected {(o * i * k * k + 7) // 8}")
        signs = unpack_flat_bits(bits, o * i * k * k).reshape(o, i, k, k)
        alpha = arrays.get(f"alpha/{name}")
        shift = state.get(f"{name}.shift")
        if (shift is None) != (src.shift is None):
            raise PackedFormatError(f"{path}: layer {name!r} shift presence does not match the model")
        try:
            packed_layer.set_weights(signs, None if alpha is None else alpha.astype(np.float32),
                                     None if shift is None else shift.numpy().reshape(-1).astype(np.float32))
        except PackingError as e:
            raise PackedFormatError(f"{path}: layer {name!r}: {e}") from None
        _set_submodule(model, name, packed_layer)
    replace_real_modules(model)
    return PackedModel(model, spec, header.get("quant_spec"), threads)


def _geometry(layer: PackedBinaryConv2d) -> tuple:
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.scale)


def _geometry_meta(meta: dict) -> tuple:
    return tuple(meta.get(k) for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "scale"))


def _binary_modules(model: nn.Module) -> list[tuple[str, BinaryConv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]


def _load_quantized(path: Path, model: nn.Module, name: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise PackedFormatError(f"{path}: quantized module {name!r} does not exist in the rebuilt model") from None
    weight = module.weight
    shape = tuple(meta["shape"])
    if tuple(weight.shape) != shape:
        raise PackedFormatError(f"{path}: quantized weight {name!r} has shape {shape}, expected {tuple(weight.shape)}")
    bits = int(meta["bits"])
    module_bits = getattr(module, "weight_bits", bits)
    if bits != module_bits:
        raise PackedFormatError(f"{path}: header field 'quantized' gives {name!r} {bits} bits; the quant_spec "
                                f"{getattr(model, 'quant_spec', None)!r} quantizes it at {module_bits}")
    count = int(np.prod(shape))
    q = unpack_uint(arrays[f"quant/{name}.q"], bits, count).reshape(shape)
    scale = torch.from_numpy(arrays[f"quant/{name}.scale"].astype(np.float32))
    offset = torch.from_numpy(arrays[f"quant/{name}.offset"].astype(np.float32))
    view = (-1,) + (1,) * (len(shape) - 1)
    q_t = torch.from_numpy(q.astype(np.uint8))
    deq = q_t.to(torch.float32) * scale.view(view) + offset.view(view)  # float32 multiply, then add
    weight.copy_(deq.to(weight.dtype))
    quantizer = getattr(module, "weight_quantizer", None)
    if isinstance(quantizer, nn.Module):
        module.weight_quantizer = FrozenQuantizedWeight(q_t, int(meta["bits"]), scale, offset,
                                                        getattr(quantizer, "granularity", "tensor"))


def info(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of a ``.bnx`` file: spec, sizes, and one line per binary layer (validated like :func:`load`)."""
    path = Path(path)
    header, arrays = validate(path)
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "file_mib": path.stat().st_size / 2**20,
        "spec": header["spec"],
        "quant_spec": header.get("quant_spec"),
        "bytes": header.get("bytes", {}),
        "layers": header["layers"],
        "quantized": header["quantized"],
        "arrays": len(arrays),
    }
