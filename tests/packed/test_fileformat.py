"""The .bnx file: round trip, size, validation errors, the quantized-layer hook."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import bnext
from bnext.models import create
from bnext.packed import PackedFormatError, info, load, pack, save
from bnext.packed.fileformat import FORMAT, HEADER, quantized_codes, read
from bnext.profile import count

from .conftest import make_model, rel_diff


@pytest.mark.parametrize("name", ["bnext18", "xnornet18", "bnext_t", "real2binary18", "binarynet18"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    model = make_model(name, 32, 0.2)
    packed = pack(model)
    path = save(packed, tmp_path / f"{name}.bnx")
    loaded = load(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), packed(x))
    assert loaded.spec == model.spec
    assert [n for n, _ in loaded.packed_layers()] == [n for n, _ in packed.packed_layers()]
    for (_, a), (_, b) in zip(loaded.packed_layers(), packed.packed_layers()):
        np.testing.assert_array_equal(a.signs, b.signs)


def test_file_layout_is_documented(tmp_path):
    packed = pack(make_model("xnornet18", 32, 0.1))
    path = save(packed, tmp_path / "m.bnx")
    with np.load(path, allow_pickle=False) as npz:
        files = set(npz.files)
        header = json.loads(npz[HEADER].tobytes())
        name = header["layers"][0]["name"]
        layer = dict(packed.packed_layers())[name]
        assert npz[f"binary/{name}"].dtype == np.uint8
        assert npz[f"binary/{name}"].size == (layer.signs.size + 7) // 8
        assert f"alpha/{name}" in files
    assert header["format"] == FORMAT and header["version"] == 1
    assert header["spec"]["name"] == "xnornet18" and header["quant_spec"] is None
    assert not any(k.endswith((".tau", "num_batches_tracked")) for k in files)
    assert any(k.endswith("running_var") for k in files)
    summary = info(path)
    assert summary["file_bytes"] == path.stat().st_size and len(summary["layers"]) == len(header["layers"])


@pytest.mark.slow
def test_bnext_t_file_size_matches_paper(tmp_path):
    model = create("bnext_t", num_classes=1000, input_size=224).eval()
    bnext.nn.set_tau(model, 0.0)
    path = save(pack(model), tmp_path / "bnext_t.bnx")
    size_mib = path.stat().st_size / 2**20
    assert abs(size_mib - 13.32) / 13.32 < 0.10, size_mib
    assert abs(size_mib - count(model, 224).size_mib) / 13.32 < 0.05


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _header_blob(header):
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def test_corrupted_and_foreign_files_give_clear_errors(tmp_path):
    good = save(pack(make_model("bnext18", 32, 0.1)), tmp_path / "good.bnx")
    data = good.read_bytes()
    cases = {
        "random.bnx": np.random.default_rng(0).bytes(4096),
        "truncated.bnx": data[: len(data) // 2],
        "empty.bnx": b"",
    }
    for fname, blob in cases.items():
        p = tmp_path / fname
        p.write_bytes(blob)
        with pytest.raises(PackedFormatError, match="expected a 'bnext-packed' file") as e:
            load(p)
        assert fname in str(e.value)
    with pytest.raises(PackedFormatError, match="does not exist"):
        load(tmp_path / "missing.bnx")
    foreign = _write_npz(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(PackedFormatError, match=f"foreign.npz has no '{HEADER}'"):
        load(foreign)
    ckpt = tmp_path / "model.pt"
    bnext.models.save(make_model("bnext18", 32, 0.1), ckpt)
    with pytest.raises(PackedFormatError, match="model.pt"):
        load(ckpt)

    header, arrays = read(good)
    wrong = _write_npz(tmp_path / "wrong.bnx", **{HEADER: _header_blob({**header, "format": "other"})}, **arrays)
    with pytest.raises(PackedFormatError, match="format is 'other'"):
        load(wrong)
    newer = _write_npz(tmp_path / "newer.bnx", **{HEADER: _header_blob({**header, "version": 99})}, **arrays)
    with pytest.raises(PackedFormatError, match="version 99"):
        load(newer)
    layer = header["layers"][0]["name"]
    missing = _write_npz(tmp_path / "missing.bnx", **{HEADER: _header_blob(header)},
                         **{k: v for k, v in arrays.items() if k != f"binary/{layer}"})
    with pytest.raises(PackedFormatError, match=f"array binary/{layer} is missing"):
        load(missing)
    other_spec = {**header, "spec": {**header["spec"], "options": {**header["spec"]["options"], "width": 0.2}}}
    mismatch = _write_npz(tmp_path / "mismatch.bnx", **{HEADER: _header_blob(other_spec)}, **arrays)
    with pytest.raises(PackedFormatError, match="mismatch.bnx"):
        load(mismatch)
    short = dict(arrays)
    short[f"binary/{layer}"] = arrays[f"binary/{layer}"][:-1]
    bad_bits = _write_npz(tmp_path / "bits.bnx", **{HEADER: _header_blob(header)}, **short)
    with pytest.raises(PackedFormatError, match=f"array binary/{layer} is uint8"):
        load(bad_bits)


# -- quantized layers: a stand-in for bnext.quant ---------------------------------------
class StandInQuantLinear(nn.Linear):
    """Per-output-channel asymmetric min-max fake quantization of the weight (bnext.quant's export API)."""

    weight_bits = 4
    act_bits = 32

    def _codes(self):
        w = self.weight.detach()
        lo, hi = w.min(dim=1).values, w.max(dim=1).values
        scale = ((hi - lo) / (2**self.weight_bits - 1)).clamp_min(1e-12)
        q = torch.round((w - lo[:, None]) / scale[:, None]).clamp(0, 2**self.weight_bits - 1)
        return q, scale, lo

    def export_quantized_weight(self) -> dict:
        q, scale, offset = self._codes()
        return {"q": q.to(torch.uint8), "bits": self.weight_bits, "scale": scale, "offset": offset}

    def forward(self, x):
        q, scale, offset = self._codes()
        return nn.functional.linear(x, q * scale[:, None] + offset[:, None], self.bias)


def _stand_in_quantize(model, spec):
    old = model.head.classifier
    new = StandInQuantLinear(old.in_features, old.out_features)
    new.load_state_dict(old.state_dict())
    model.head.classifier = new
    model.quant_spec = spec
    return model


@pytest.fixture
def stand_in_quant(monkeypatch):
    module = types.ModuleType("bnext.quant")
    module.quantize = _stand_in_quantize
    monkeypatch.setitem(sys.modules, "bnext.quant", module)
    monkeypatch.setattr(bnext, "quant", module, raising=False)
    return module


def test_quantized_layers_are_stored_at_their_bit_width(tmp_path, stand_in_quant):
    model = _stand_in_quantize(make_model("bnext18", 32, 0.2), "32/32-32/32-32/32-4/32")
    packed = pack(model)
    assert packed.quant_spec == "32/32-32/32-32/32-4/32"
    path = save(packed, tmp_path / "q.bnx")
    header, arrays = read(path)
    assert header["quantized"] == [{"name": "head.classifier", "bits": 4, "shape": [10, 102]}]
    assert arrays["quant/head.classifier.q"].nbytes == (10 * 102 * 4 + 7) // 8
    assert "state/head.classifier.weight" not in arrays and "state/head.classifier.bias" in arrays
    loaded = load(path)
    assert isinstance(loaded.model.head.classifier, StandInQuantLinear)
    exported = packed.model.head.classifier.export_quantized_weight()
    reloaded = loaded.model.head.classifier.export_quantized_weight()
    assert torch.equal(exported["q"], reloaded["q"])
    x = torch.randn(3, 3, 32, 32)
    assert rel_diff(packed(x), loaded(x)) < 1e-5


def test_real_quant_package_round_trip(tmp_path):
    quant = pytest.importorskip("bnext.quant")
    if not hasattr(quant, "calibrate"):
        pytest.skip("bnext.quant without calibrate()")
    model = make_model("bnext18", 32, 0.25)
    qmodel = quant.quantize(model, "8/8-4/8-4/8-8/8")
    x = torch.randn(4, 3, 32, 32)
    quant.calibrate(qmodel, [x])
    packed = pack(qmodel)
    with torch.inference_mode():
        assert torch.equal(packed(x), qmodel(x))
    loaded = load(save(packed, tmp_path / "q.bnx"))
    assert loaded.quant_spec == qmodel.quant_spec
    for name, m in packed.model.named_modules():
        if hasattr(m, "export_quantized_weight") and getattr(m, "weight_bits", 32) < 32:
            a = m.export_quantized_weight()["q"]
            b = quantized_codes(loaded.model.get_submodule(name))["q"]
            assert torch.equal(a, b), name
    assert torch.equal(loaded(x), packed(x))
    again = load(save(loaded, tmp_path / "again.bnx"))
    assert torch.equal(again(x), packed(x))
