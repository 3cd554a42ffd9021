"""What a ``.bnx`` file must satisfy before anything is built from it (see :mod:`bnext.packed.fileformat`).

Every check names the file and the field:

- the container: an uncompressed zip of ``.npy`` members, each member's declared shape x dtype equal
  to its stored bytes (so no member can make the reader allocate more than the file holds), read
  with ``allow_pickle=False``;
- the header: JSON types and ranges of every field (:func:`check_header`);
- the arrays against the header (:func:`check_arrays`): exact byte length ``ceil(n * bits / 8)`` of
  binary and quantized codes, dtypes, ``bits`` in 1..16, scale/offset lengths, alpha and shift shapes;
- the header's model against the arrays (:func:`check_model_tensors`): the model is first built on
  PyTorch's ``meta`` device (no memory), and every tensor it would allocate must match a stored
  array, so a tampered ``num_classes`` or width is refused before any allocation.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

FORMAT = "bnext-packed"
VERSION = 1
HEADER = "__header__"
MAX_BITS = 16


class PackedFormatError(ValueError):
    """A file is not a readable packed model (foreign, corrupted, tampered, or of a newer version)."""


def expected() -> str:
    return f"a {FORMAT!r} file (npz with a JSON {HEADER!r}) written by bnext.packed.save"


def _fail(path: Path, field: str, what: str) -> PackedFormatError:
    return PackedFormatError(f"{path}: {field} {what}")


# -- container ----------------------------------------------------------------------------
def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` whose members' shapes agree with their sizes (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                raise _fail(path, f"member {info.filename!r}", "is not an uncompressed .npy array "
                            "(bnext.packed.save writes np.savez members only)")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise _fail(path, f"array {name!r}", "holds Python objects (refused: never unpickled)")
                need = math.prod(shape) * dtype.itemsize
                if need != info.file_size - f.tell():
                    raise _fail(path, f"array {name!r}", f"declares shape {shape} {dtype} ({need} bytes) but "
                                f"stores {info.file_size - f.tell()} bytes")
            with zf.open(info) as f:
                arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


# -- header -------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _need(path: Path, obj: Any, key: str, field: str, kind: type | tuple, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _fail(path, f"header field {field!r}", f"is missing; expected {what}")
    value = obj[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        raise _fail(path, f"header field {field!r}", f"is {value!r} ({type(value).__name__}); expected {what}")
    return value


def _need_int(path: Path, obj: Any, key: str, field: str, lo: int, hi: int | None = None) -> int:
    what = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    value = _need(path, obj, key, field, int, what)
    if value < lo or (hi is not None and value > hi):
        raise _fail(path, f"header field {field!r}", f"is {value}; expected {what}")
    return value


def parse_header(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Decode ``__header__`` and check format, version and every field's type (:class:`PackedFormatError`)."""
    if HEADER not in arrays:
        raise PackedFormatError(f"{path} has no {HEADER!r} entry; expected {expected()}")
    blob = arrays.pop(HEADER)
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise _fail(path, HEADER, f"is {blob.dtype} {list(blob.shape)}; expected 1-D uint8 JSON text")
    try:
        header = json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackedFormatError(f"{path}: header is not valid JSON ({e}); expected {expected()}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise PackedFormatError(f"{path}: format is {found!r}; expected {expected()}")
    version = header.get("version")
    if not _is_int(version) or version > VERSION or version < 1:
        raise PackedFormatError(f"{path}: format version {version!r}; this workbench reads versions 1..{VERSION}")
    check_header(path, header)
    return header


def _record(path: Path, record: Any, field: str) -> str:
    """Check that a list entry is a dict with a ``name``; returns ``field`` for the messages."""
    if not isinstance(record, dict):
        raise _fail(path, f"header field {field!r}", f"is {record!r}; expected a dict")
    _need(path, record, "name", f"{field}.name", str, "a module name")
    return field


def check_header(path: Path, header: dict[str, Any]) -> None:
    """Types and ranges of ``spec``, ``quant_spec``, ``layers`` and ``quantized``."""
    spec = _need(path, header, "spec", "spec", dict, "a dict with name/num_classes/input_size/options")
    _need(path, spec, "name", "spec.name", str, "a registered model name")
    _need_int(path, spec, "num_classes", "spec.num_classes", 1)
    _need_int(path, spec, "input_size", "spec.input_size", 1, 1 << 16)
    _need(path, spec, "options", "spec.options", dict, "a dict of bnext.models.create options")
    if header.get("quant_spec") is not None and not isinstance(header["quant_spec"], str):
        raise _fail(path, "header field 'quant_spec'", f"is {header['quant_spec']!r}; expected a string or null")
    layers = _need(path, header, "layers", "layers", list, "a list of binary-layer records")
    for i, layer in enumerate(layers):
        f = _record(path, layer, f"layers[{i}]")
        for key in ("in_channels", "out_channels", "kernel_size", "stride"):
            _need_int(path, layer, key, f"{f}.{key}", 1)
        _need_int(path, layer, "padding", f"{f}.padding", 0)
        _need(path, layer, "scale", f"{f}.scale", str, "'none' or a scale kind")
    quantized = _need(path, header, "quantized", "quantized", list, "a list of quantized-layer records")
    for i, q in enumerate(quantized):
        f = _record(path, q, f"quantized[{i}]")
        _need_int(path, q, "bits", f"{f}.bits", 1, MAX_BITS)
        shape = _need(path, q, "shape", f"{f}.shape", list, "the weight shape (a list of positive integers)")
        if not shape or not all(_is_int(n) and n >= 1 for n in shape):
            raise _fail(path, f"header field '{f}.shape'", f"is {shape!r}; expected a list of positive integers")
    for key in ("layers", "quantized"):
        names = [x["name"] for x in header[key]]
        if len(set(names)) != len(names):
            raise _fail(path, f"header field {key!r}", "lists a module twice")


# -- arrays against the header --------------------------------------------------------------
def _array(path: Path, arrays: dict[str, np.ndarray], key: str, dtype: type, shape: tuple[int, ...]) -> None:
    if key not in arrays:
        raise _fail(path, f"array {key}", "is missing (listed in the header)")
    a = arrays[key]
    if a.dtype != dtype or tuple(a.shape) != shape:
        what = f"{np.dtype(dtype).name} {list(shape)}"
        if dtype is np.uint8 and len(shape) == 1:
            what += f" ({shape[0]} bytes)"
        raise _fail(path, f"array {key}", f"is {a.dtype} {list(a.shape)}; expected {what}")


def check_arrays(path: Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Every array the header lists has the exact dtype and length the header implies."""
    for layer in header["layers"]:
        name, o, i, k = layer["name"], layer["out_channels"], layer["in_channels"], layer["kernel_size"]
        _array(path, arrays, f"binary/{name}", np.uint8, (math.ceil(o * i * k * k / 8),))
        if layer["scale"] != "none":
            _array(path, arrays, f"alpha/{name}", np.float32, (o,))
        elif f"alpha/{name}" in arrays:
            raise _fail(path, f"array alpha/{name}", "is stored for an unscaled layer (scale 'none')")
        if f"state/{name}.shift" in arrays:
            _array(path, arrays, f"state/{name}.shift", np.float32, (1, i, 1, 1))
    for q in header["quantized"]:
        name, bits, shape = q["name"], q["bits"], q["shape"]
        _array(path, arrays, f"quant/{name}.q", np.uint8, (math.ceil(math.prod(shape) * bits / 8),))
        for part in ("scale", "offset"):
            _array(path, arrays, f"quant/{name}.{part}", np.float32, (shape[0],))
    for key, a in arrays.items():
        if key.startswith("state/") and a.dtype.kind not in "fiub":
            raise _fail(path, f"array {key}", f"is {a.dtype}; expected a numeric array (float32 as trained)")
    listed = {f"{kind}/{layer['name']}" for layer in header["layers"] for kind in ("binary", "alpha")}
    listed |= {f"quant/{q['name']}.{p}" for q in header["quantized"] for p in ("q", "scale", "offset")}
    stray = sorted(k for k in arrays if not k.startswith("state/") and k not in listed)
    if stray:
        raise _fail(path, f"array {stray[0]}", f"is not listed in the header ({len(stray)} such array(s))")


# -- the model the header describes, against the arrays ----------------------------------------
def _check_dtype(path: Path, key: str, array: np.ndarray, tensor: Any) -> None:
    """A ``state/`` array must have the dtype of the model tensor it fills (float32 as trained)."""
    import torch

    try:
        want = torch.empty(0, dtype=tensor.dtype).numpy().dtype
    except TypeError:  # a dtype numpy lacks (bfloat16): compare by name
        want = None
    if (array.dtype != want) if want is not None else (array.dtype.name != str(tensor.dtype).split(".")[-1]):
        raise _fail(path, f"array {key}", f"is {array.dtype}; the model's tensor is "
                    f"{str(tensor.dtype).removeprefix('torch.')} (bnext.packed.save stores it as trained)")


def check_model_tensors(path: Path, header: dict[str, Any], arrays: dict[str, np.ndarray], model: nn.Module) -> None:
    """Every tensor of ``model`` (built on the ``meta`` device from ``spec``) matches a stored array's shape.

    Binary weights match their layer record, quantized weights their record's shape, everything
    else a ``state/<key>`` array; ``tau`` and ``num_batches_tracked`` are scalars. So building the
    real model allocates no more than the file holds (up to 32x for the 1-bit weights).
    """
    binary = {layer["name"]: layer for layer in header["layers"]}
    quantized = {q["name"]: q for q in header["quantized"]}
    spec = header["spec"]
    for key, tensor in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        shape = tuple(tensor.shape)
        if tensor.numel() <= 1 and leaf in ("tau", "num_batches_tracked"):
            continue
        if module in binary and leaf in ("weight", "shift"):
            b = binary[module]
            want = ((b["out_channels"], b["in_channels"], b["kernel_size"], b["kernel_size"]) if leaf == "weight"
                    else tuple(arrays[f"state/{key}"].shape) if f"state/{key}" in arrays else shape)
            source = f"layer record {module!r}" if leaf == "weight" else f"array state/{key}"
        elif module in quantized and leaf == "weight":
            want, source = tuple(quantized[module]["shape"]), f"quantized record {module!r}"
        elif f"state/{key}" in arrays:
            want, source = tuple(arrays[f"state/{key}"].shape), f"array state/{key}"
        else:
            raise _fail(path, f"array state/{key}", f"is missing: model {spec['name']!r} with options "
                        f"{spec['options']} (num_classes {spec['num_classes']}) has a tensor {key} of shape {shape}")
        if source.startswith("array state/"):
            _check_dtype(path, f"state/{key}", arrays[f"state/{key}"], tensor)
        if want != shape:
            raise _fail(path, "header field 'spec'", f"describes a model whose {key} has shape {shape}, but the "
                        f"file's {source} has {want} (spec {spec['name']!r}, num_classes {spec['num_classes']}, "
                        f"options {spec['options']})")
