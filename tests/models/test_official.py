"""Importing the authors' BNext checkpoints (issue 15): the fixture's logits, every listed tensor, errors.

The reference material lives in ``<repo>/../shared/reference/official-bnext/`` (override with
``BNEXT_OFFICIAL_DIR``): a checkpoint in the authors' exact format with the logits their code
computes, and the name/shape listings of the released T/S/M/L and BNext-18.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnext import models
from bnext.models.__main__ import main
from bnext.models.official import OfficialCheckpointError, convert_state_dict, import_official
from bnext.nn import BinaryConv2d, binary_layers

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_DIR = Path(os.environ.get("BNEXT_OFFICIAL_DIR", REPO.parent / "shared" / "reference" / "official-bnext"))
FIXTURE = OFFICIAL_DIR / "official_bnext_t_quarter_c10.pth.tar"
EXPECTED = OFFICIAL_DIR / "official_bnext_t_quarter_c10_expected.npz"
LISTINGS = {
    "bnext_t": "bnext_t_1000_classes.tsv",
    "bnext_s": "bnext_s_1000_classes.tsv",
    "bnext_m": "bnext_m_1000_classes.tsv",
    "bnext_l": "bnext_l_1000_classes.tsv",
    "bnext18": "bnext18_1000_classes.tsv",
}
needs_reference = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"reference material not found in {OFFICIAL_DIR} "
                                     "(set BNEXT_OFFICIAL_DIR)")
pytestmark = needs_reference


def listing_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The listed names and shapes as ``module.``-prefixed tensors, each a broadcast view of one
    distinct value per tensor (no memory for the big models)."""
    sd = {}
    lines = (OFFICIAL_DIR / LISTINGS[name]).read_text().splitlines()
    assert lines[0].split("\t") == ["name", "shape", "dtype"]
    for i, line in enumerate(lines[1:]):
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        value = torch.full((), 1e-8 if key.endswith("temperature") else i + 1, dtype=getattr(torch, dtype))
        sd[f"module.{key}"] = value.expand(dims)
    return sd


def expected() -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(EXPECTED) as npz:
        return torch.from_numpy(npz["inputs"]), torch.from_numpy(npz["logits"])


@pytest.mark.parametrize("sign_zero", [1, 0])
def test_fixture_reproduces_their_logits(sign_zero):
    model = import_official(FIXTURE, sign_zero=sign_zero)
    assert model.spec == {"name": "bnext_t", "num_classes": 10, "input_size": 32,
                          "options": {"width": 0.25, "info_rcp": True, "elm_attention": True, "sign_zero": sign_zero,
                                      "clamp_mix": True}}
    assert not model.training
    layers = list(binary_layers(model))
    assert layers and all(float(m.tau) == 0.0 and m.sign_zero == sign_zero for _, m in layers)
    x, logits = expected()
    with torch.no_grad():
        diff = (model(x) - logits).abs().max().item()
    assert diff <= 1e-5
    conv = model.official
    raw = torch.load(FIXTURE, weights_only=True)["state_dict"]
    assert len(conv.mapped) + len(conv.dropped) == len(raw)
    assert {k.rsplit(".", 2)[-2] for k in conv.dropped} == {"prelu", "activation1", "binary_activation"}


def test_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "official" / "bnext_t.pt"
    assert main(["import", str(FIXTURE), "-o", str(out)]) == 0
    assert "bnext_t (width 0.25, 10 classes, input 32)" in capsys.readouterr().out
    model = models.load(out)
    x, logits = expected()
    with torch.no_grad():
        assert (model.eval()(x) - logits).abs().max().item() <= 1e-5
    raw = models.read_checkpoint(out)
    assert raw["extra"]["imported_from"] == str(FIXTURE.resolve()) and raw["extra"]["official_mapped"] == 604


def test_new_classifier_keeps_everything_else():
    model = import_official(FIXTURE, num_classes=3)
    base = import_official(FIXTURE)
    assert model.head.classifier.out_features == 3 and model.official.reset == ["head.classifier.weight",
                                                                                   "head.classifier.bias"]
    assert torch.equal(model.blocks[5].spatial.conv.weight, base.blocks[5].spatial.conv.weight)


@pytest.mark.parametrize("name", list(LISTINGS))
def test_every_listed_tensor_is_consumed(name):
    sd = listing_state_dict(name)
    conv = convert_state_dict(sd)
    assert (conv.model, conv.num_classes, conv.input_size, conv.options["width"]) == (name, 1000, 224, 1.0)
    assert set(conv.mapped) | set(conv.dropped) == {k.removeprefix("module.") for k in sd}
    assert not set(conv.mapped) & set(conv.dropped)
    # dropped: exactly what their forward never calls
    for key in conv.dropped:
        assert key.endswith(("binary_activation.temperature", "activation1.weight")) or key == "feature.0.prelu.weight"
    with torch.device("meta"):
        target = models.create(name, num_classes=1000, input_size=224).state_dict()
    assert set(conv.state_dict) == set(target)  # every workbench tensor gets a value
    assert len(set(conv.mapped.values())) == len(conv.mapped)
    # a value lands where its name says: the i-th listed tensor carries the value i + 1
    for key, ours in conv.mapped.items():
        if not ours.endswith(".tau"):
            assert torch.equal(conv.state_dict[ours], sd[f"module.{key}"])


@pytest.mark.parametrize("name", ["bnext_t", "bnext18"])  # every listing is checked in memory above
def test_listing_imports_from_a_file(tmp_path, name):
    path = tmp_path / f"{name}.pth.tar"
    sd = listing_state_dict(name)
    torch.save({"state_dict": {k: v.contiguous() for k, v in sd.items()}, "epoch": 511, "optimizer": {"state": {}}},
               path)
    model = import_official(path)
    assert model.spec["name"] == name and model.spec["input_size"] == 224
    assert all(float(m.tau) == 0.0 for _, m in binary_layers(model))
    first = next(m for _, m in binary_layers(model))
    assert first.weight.flatten()[0].item() > 1  # a listed value, not the N(0, 1e-3) initialization
    del model


def test_broadcast_views_in_a_file_are_refused(tmp_path):
    path = tmp_path / "bnext_l.pth.tar"  # one element per tensor on disk: a 400 MB model from a tiny file
    torch.save({"state_dict": listing_state_dict("bnext_l"), "epoch": 511}, path)
    with pytest.raises(OfficialCheckpointError, match=r"bnext_l.pth.tar: tensor module\..* is a broadcast "
                                                      r"\(stride-0\) view"):
        import_official(path)


def test_recoupling_weight_outside_0_1_keeps_their_unclamped_forward(tmp_path):
    container = torch.load(FIXTURE, weights_only=True)
    container["state_dict"]["module.feature.3.Attention.scale"].view(-1)[:4] = torch.tensor([1.5, -0.5, 2.0, 1.2])
    path = tmp_path / "unclamped.pth.tar"
    torch.save(container, path)
    model = import_official(path)
    assert model.spec["options"]["clamp_mix"] is False and "clamp_mix=False" in model.official.describe()
    clamped = models.create("bnext_t", num_classes=10, input_size=32, width=0.25).eval()
    clamped.load_state_dict(model.state_dict())
    x, _ = expected()
    with torch.no_grad():
        assert not torch.allclose(model(x), clamped(x))
        model.blocks[2].spatial.mix_weight.clamp_(0, 1)  # clamping by hand gives the clamped model back
        assert torch.equal(model(x), clamped(x))


def test_recognizes_width_and_size_and_respects_name():
    sd = torch.load(FIXTURE, weights_only=True)["state_dict"]
    conv = convert_state_dict(sd)
    assert (conv.model, conv.options["width"]) == ("bnext_t", 0.25)
    assert convert_state_dict(sd, name="bnext_s").options["width"] == pytest.approx(8 / 48)
    with pytest.raises(OfficialCheckpointError, match=r"not 'bnext_l'.*blocks per stage \(1, 2, 2, 6, 2\)"):
        convert_state_dict(sd, name="bnext_l")


def _fixture_sd() -> dict[str, torch.Tensor]:
    return dict(torch.load(FIXTURE, weights_only=True)["state_dict"])


def test_errors_name_the_first_bad_tensor(tmp_path):
    sd = _fixture_sd()
    sd["module.feature.3.Attention.extra.weight"] = torch.zeros(3)
    with pytest.raises(OfficialCheckpointError, match=r"cannot place tensor 'feature\.3\.Attention\.extra\.weight'"):
        convert_state_dict(sd)
    sd = _fixture_sd()
    sd["module.feature.2.FFN_1.norm1.weight"] = torch.zeros(7)
    with pytest.raises(OfficialCheckpointError, match=r"'feature\.2\.FFN_1\.norm1\.weight' has shape \[7\] but "
                       r"bnext_t .*expects \[16\] at 'blocks\.1\.pointwise\.0\.bn\.weight'"):
        convert_state_dict(sd)
    sd = _fixture_sd()
    del sd["module.feature.5.FFN.se.se.3.bias"]
    with pytest.raises(OfficialCheckpointError, match=r"no tensor for 'blocks\.4\.pointwise\.0\.se\.expand\.bias'"):
        convert_state_dict(sd)
    with pytest.raises(OfficialCheckpointError, match="unrecognized state dict"):
        convert_state_dict({"encoder.weight": torch.zeros(2), "fc.weight": torch.zeros(2, 2)})


def test_wrong_and_truncated_files(tmp_path):
    data = FIXTURE.read_bytes()
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(OfficialCheckpointError, match=r"cut\.pth\.tar is not a readable checkpoint"):
        import_official(cut)
    text = tmp_path / "notes.pth.tar"
    text.write_text("hello")
    with pytest.raises(OfficialCheckpointError, match="is not a readable checkpoint"):
        import_official(text)
    with pytest.raises(OfficialCheckpointError, match="does not exist"):
        import_official(tmp_path / "absent.pth.tar")
    other = tmp_path / "other.pth.tar"
    torch.save({"epoch": 3, "weights": [1, 2]}, other)
    with pytest.raises(OfficialCheckpointError, match=r"holds no model state dict \(found keys \['epoch', 'weights'\]"):
        import_official(other)
    ours = tmp_path / "ours.pt"
    models.save(models.create("bnext_t", num_classes=10, input_size=32, width=0.25), ours)
    with pytest.raises(OfficialCheckpointError, match="already a workbench checkpoint"):
        import_official(ours)
    assert main(["import", str(cut), "-o", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_sign_zero_follows_torch_sign_at_exact_zeros():
    torch.manual_seed(0)
    layers = {z: BinaryConv2d(4, 5, 3, shift=True, sign_zero=z).eval() for z in (1, 0)}
    layers[0].load_state_dict(layers[1].state_dict())
    w = layers[1].weight
    with torch.no_grad():
        w[:, :2] = 0.0  # exact zero weights
        layers[0].weight.copy_(w)
    x = torch.randn(2, 4, 6, 6)
    x[:, 1, 2:4] = -layers[1].shift[0, 1]  # exact zero inputs after the shift
    with torch.no_grad():
        xs = x + layers[1].shift
        ref0 = F.conv2d(torch.sign(xs), torch.sign(w), padding=1)
        ref1 = F.conv2d(torch.where(xs >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0), padding=1)
        assert torch.equal(layers[0](x), ref0) and torch.equal(layers[1](x), ref1)
        assert not torch.equal(ref0, ref1)
    with pytest.raises(ValueError, match="sign_zero must be 1"):
        BinaryConv2d(4, 5, sign_zero=-1)


def test_packing_refuses_sign_zero_0():
    from bnext.packed import PackingError, pack

    model = import_official(FIXTURE, sign_zero=0)
    with pytest.raises(PackingError, match="sign_zero=0"):
        pack(model)


def test_tau_from_the_stored_temperature():
    sd = _fixture_sd()
    sd["module.feature.1.Attention.binary_conv.temperature"] = torch.tensor([0.5])
    sd["module.feature.2.Attention.binary_conv.temperature"] = torch.tensor([2e-7])  # theirs: still clamp(w / t)
    sd["module.feature.3.Attention.binary_conv.temperature"] = torch.tensor([9e-8])  # theirs: sign
    conv = convert_state_dict(sd)
    taus = [float(conv.state_dict[f"blocks.{i}.spatial.conv.tau"]) for i in range(4)]
    assert taus == pytest.approx([0.5, 2e-7, 0.0, 0.0])
    assert all(float(v) == 0.0 for k, v in conv.state_dict.items() if k.endswith(".tau") and "blocks.0." not in k
               and "blocks.1.spatial" not in k)
