"""Tampered .bnx files: every array checked against the header, every header field typed and bounded."""

import copy
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from bnext.packed import PackedFormatError, load, pack, save
from bnext.packed.fileformat import HEADER, read

from .conftest import make_model


def _write(path, header, arrays):
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **{HEADER: blob}, **arrays)
    return path


@pytest.fixture(scope="module")
def quantized_file(tmp_path_factory):
    quant = pytest.importorskip("bnext.quant")
    model = quant.quantize(make_model("bnext18", 32, 0.1), "8/8-4/8-4/8-8/8")
    quant.calibrate(model, [torch.randn(4, 3, 32, 32)])
    path = save(pack(model), tmp_path_factory.mktemp("q") / "q.bnx")
    header, arrays = read(path)
    return path, header, arrays


def test_quantized_codes_cut_short_are_refused(tmp_path, quantized_file):
    _, header, arrays = quantized_file
    q = header["quantized"][0]
    key = f"quant/{q['name']}.q"
    arrays = {**arrays, key: arrays[key][:-3]}  # was zero-padded on load: logits off, no error
    n = -(-int(np.prod(q["shape"])) * q["bits"] // 8)
    with pytest.raises(PackedFormatError, match=rf"short.bnx: array {key} is uint8 \[{n - 3}\]; expected uint8 "
                                                rf"\[{n}\] \({n} bytes\)"):
        load(_write(tmp_path / "short.bnx", header, arrays))


@pytest.mark.parametrize("bits", [0, 64, 17, -1, 8.0, "8", True])
def test_bit_widths_outside_1_to_16_are_refused(tmp_path, quantized_file, bits):
    _, header, arrays = quantized_file
    header = copy.deepcopy(header)
    header["quantized"][0]["bits"] = bits
    with pytest.raises(PackedFormatError, match=r"header field 'quantized\[0\].bits' is .*expected an integer in "
                                                r"1..16"):
        load(_write(tmp_path / "bits.bnx", header, arrays))


def test_bit_width_must_equal_the_quant_spec(tmp_path, quantized_file):
    _, header, arrays = quantized_file
    header = copy.deepcopy(header)
    q = header["quantized"][0]
    assert q["bits"] == 8
    q["bits"] = 4  # and a code array of the right length for 4 bits
    key = f"quant/{q['name']}.q"
    arrays = {**arrays, key: arrays[key][: -(-int(np.prod(q["shape"])) * 4 // 8)]}
    with pytest.raises(PackedFormatError, match=rf"gives {q['name']!r} 4 bits; the quant_spec '8/8-4/8-4/8-8/8' "
                                                "quantizes it at 8"):
        load(_write(tmp_path / "spec.bnx", header, arrays))


def test_scale_and_offset_lengths_are_checked(tmp_path, quantized_file):
    _, header, arrays = quantized_file
    q = header["quantized"][0]
    key = f"quant/{q['name']}.offset"
    arrays = {**arrays, key: arrays[key][:-1]}
    with pytest.raises(PackedFormatError, match=rf"array {key} is float32 \[{q['shape'][0] - 1}\]; expected "
                                                rf"float32 \[{q['shape'][0]}\]"):
        load(_write(tmp_path / "offset.bnx", header, arrays))


@pytest.fixture(scope="module")
def binary_file(tmp_path_factory):
    path = save(pack(make_model("xnornet18", 32, 0.1)), tmp_path_factory.mktemp("b") / "b.bnx")
    header, arrays = read(path)
    return path, header, arrays


def test_tampered_num_classes_is_refused_before_any_allocation(tmp_path, binary_file):
    _, header, arrays = binary_file
    header = copy.deepcopy(header)
    header["spec"]["num_classes"] = 10**12  # a Linear of 10^12 rows: terabytes
    with pytest.raises(PackedFormatError, match=r"header field 'spec' describes a model whose .* has shape "
                                                r"\(1000000000000, .*num_classes 1000000000000"):
        load(_write(tmp_path / "classes.bnx", header, arrays))


def test_tampered_width_is_refused(tmp_path, binary_file):
    _, header, arrays = binary_file
    header = copy.deepcopy(header)
    header["spec"]["options"]["width"] = 64.0
    with pytest.raises(PackedFormatError, match="header field 'spec' describes a model whose"):
        load(_write(tmp_path / "width.bnx", header, arrays))


def _set(header, dotted, value):
    node = header
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


@pytest.mark.parametrize("dotted,value,field", [
    ("spec.num_classes", "10", "spec.num_classes"),
    ("spec.num_classes", 0, "spec.num_classes"),
    ("spec.input_size", None, "spec.input_size"),
    ("spec.options", [], "spec.options"),
    ("spec.name", KeyError, "spec.name"),
    ("spec", "bnext18", "spec"),
    ("layers", {}, "layers"),
    ("quantized", KeyError, "quantized"),
    ("layers.0.in_channels", "8", "layers[0].in_channels"),
    ("layers.0.kernel_size", 0, "layers[0].kernel_size"),
    ("layers.0.padding", -1, "layers[0].padding"),
    ("layers.0.scale", None, "layers[0].scale"),
    ("layers.0.name", 3, "layers[0].name"),
    ("quant_spec", 5, "quant_spec"),
])
def test_malformed_headers_name_the_field(tmp_path, binary_file, dotted, value, field):
    _, header, arrays = binary_file
    header = copy.deepcopy(header)
    _set(header, dotted, value)
    with pytest.raises(PackedFormatError) as e:
        load(_write(tmp_path / "h.bnx", header, arrays))
    assert "h.bnx" in str(e.value) and f"'{field}'" in str(e.value)


def test_bogus_spec_is_a_packed_format_error(tmp_path, binary_file):
    _, header, arrays = binary_file
    header = copy.deepcopy(header)
    header["spec"]["name"] = "no_such_model"
    with pytest.raises(PackedFormatError, match="header field 'spec' cannot rebuild a model"):
        load(_write(tmp_path / "name.bnx", header, arrays))
    header["spec"]["name"] = "xnornet18"
    header["spec"]["options"]["no_such_option"] = 1
    with pytest.raises(PackedFormatError, match="header field 'spec' cannot rebuild a model"):
        load(_write(tmp_path / "option.bnx", header, arrays))


def test_arrays_of_the_wrong_dtype_or_unlisted_are_refused(tmp_path, binary_file):
    _, header, arrays = binary_file
    name = header["layers"][0]["name"]
    bad = {**arrays, f"alpha/{name}": arrays[f"alpha/{name}"].astype(np.float64)}
    with pytest.raises(PackedFormatError, match=rf"array alpha/{name} is float64"):
        load(_write(tmp_path / "alpha.bnx", header, bad))
    bad = {**arrays, f"binary/{name}": arrays[f"binary/{name}"].astype(np.int16)}
    with pytest.raises(PackedFormatError, match=rf"array binary/{name} is int16"):
        load(_write(tmp_path / "dtype.bnx", header, bad))
    with pytest.raises(PackedFormatError, match="array binary/extra is not listed in the header"):
        load(_write(tmp_path / "extra.bnx", header, {**arrays, "binary/extra": np.zeros(3, np.uint8)}))


def test_container_members_cannot_claim_more_than_they_store(tmp_path, binary_file):
    path, _, _ = binary_file
    huge = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    huge["shape"] = (10**13,)  # a .npy header claiming 40 TB in a member of a few bytes
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, huge)
    buf.write(b"\0" * 8)
    tampered = tmp_path / "huge.bnx"
    tampered.write_bytes(path.read_bytes())
    with zipfile.ZipFile(tampered, "a") as zf:
        zf.writestr("state/huge.npy", buf.getvalue())
    with pytest.raises(PackedFormatError, match=r"array 'state/huge' declares shape \(10000000000000,\) float32"):
        load(tampered)
    compressed = tmp_path / "deflated.bnx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(PackedFormatError, match="is not an uncompressed .npy array"):
        load(compressed)


@pytest.mark.slow
def test_cli_prints_one_line_for_a_tampered_file(tmp_path, binary_file):
    _, header, arrays = binary_file
    header = copy.deepcopy(header)
    header["spec"]["num_classes"] = "ten"
    bad = _write(tmp_path / "cli.bnx", header, arrays)
    r = subprocess.run([sys.executable, "-m", "bnext.packed", "info", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "'spec.num_classes'" in r.stderr


def _state_key(arrays):
    return next(k for k, v in arrays.items() if k.startswith("state/") and v.dtype == np.float32 and v.ndim == 1)


@pytest.mark.parametrize("kind", ["int64", "text"])
def test_state_arrays_of_another_dtype_are_refused_by_load_and_info(tmp_path, binary_file, kind):
    from bnext.packed import info

    _, header, arrays = binary_file
    key = _state_key(arrays)
    value = arrays[key].astype(np.int64) if kind == "int64" else np.array(["x"] * arrays[key].shape[0])
    bad = _write(tmp_path / "state.bnx", header, {**arrays, key: value})  # int64 loaded and gave 10% top-1
    want = (rf"state.bnx: array {key} is int64; the model's tensor is float32" if kind == "int64"
            else rf"state.bnx: array {key} is <U1; expected a numeric array")
    for reader in (load, info):
        with pytest.raises(PackedFormatError, match=want):
            reader(bad)


@pytest.mark.parametrize("dotted, value, message", [
    ("spec.num_classes", 10**12, r"header field 'spec' describes a model whose"),
    ("spec.options.width", 1e6, r"header field 'spec' (describes a model whose|cannot rebuild a model)"),
    ("quant_spec", "bogus", r"q.bnx: header field 'quant_spec' 'bogus' cannot be applied"),
])
def test_info_validates_like_load(tmp_path, binary_file, dotted, value, message):
    from bnext.packed import info

    _, header, arrays = binary_file
    header = copy.deepcopy(header)
    _set(header, dotted, value)
    bad = _write(tmp_path / "q.bnx", header, arrays)
    for reader in (info, load):
        with pytest.raises(PackedFormatError, match=message):
            reader(bad)
