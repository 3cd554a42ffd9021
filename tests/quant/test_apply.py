"""quantize(): which modules each spec replaces, what stays untouched, export, save/load."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from bnext import models, profile
from bnext.nn import BinaryConv2d
from bnext.quant import (
    PAPER_SPEC,
    TABLE7_SPECS,
    QuantConv2d,
    QuantLinear,
    calibrate,
    dequantize,
    find_groups,
    group_counts,
    load,
    quantize,
    quantized_layers,
    save,
)

from .conftest import small

# SE branches: BNext-18 16 modules; BNext-T/S 13 blocks (5 widen: 3 modules, 8 keep: 2) = 31;
# M 21 blocks = 5*3 + 16*2 = 47; L 29 blocks = 5*3 + 24*2 = 63; Real-to-Binary 16 units.
# D = real downsample convs: 3 stage transitions (resnet18: + its 16 real block convs).
GROUP_SIZES = {
    "bnext18": (1, 16, 16, 1, 3),
    "bnext_t": (1, 31, 31, 1, 0),
    "bnext_s": (1, 31, 31, 1, 0),
    "bnext_m": (1, 47, 47, 1, 0),
    "bnext_l": (1, 63, 63, 1, 0),
    "real2binary18": (1, 16, 16, 1, 3),
    "bireal18": (1, 0, 0, 1, 3),
    "binarynet18": (1, 0, 0, 1, 3),
    "xnornet18": (1, 0, 0, 1, 3),
    "resnet18": (1, 0, 0, 1, 19),
}
GROUP_NAMES = ("input", "squeeze", "expand", "output", "downsample")


def test_every_zoo_model_is_covered():
    assert set(GROUP_SIZES) == set(models.list_models())


@pytest.mark.parametrize("name", sorted(GROUP_SIZES))
def test_groups_found_by_structure(name):
    sizes = {g: len(v) for g, v in find_groups(small(name)).items()}
    assert sizes == dict(zip(GROUP_NAMES, GROUP_SIZES[name]))


@pytest.mark.parametrize("name", sorted(GROUP_SIZES))
@pytest.mark.parametrize("spec", [*TABLE7_SPECS[1:], "8/8-32/32-4/8-32/32", "8/8-4/8-4/8-8/8-8/8"])
def test_quantize_replaces_exactly_the_groups(name, spec):
    model = small(name)
    has_se = GROUP_SIZES[name][1] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize(model, spec)
    notes = [str(w.message) for w in caught if "no SE branch" in str(w.message)]
    se_requested = spec.split("-")[1] != "32/32" or spec.split("-")[2] != "32/32"
    assert bool(notes) == (se_requested and not has_se)
    fields = spec.split("-") + ["32/32"] * (5 - len(spec.split("-")))
    expected = {g: (n if f != "32/32" else 0) for g, n, f in zip(GROUP_NAMES, GROUP_SIZES[name], fields)}
    assert group_counts(q) == expected
    for _, layer in quantized_layers(q):
        w, a = fields[GROUP_NAMES.index(layer.quant_group)].split("/")
        assert (layer.weight_bits, layer.act_bits) == (int(w), int(a))
        assert isinstance(layer, nn.Conv2d if isinstance(layer, QuantConv2d) else nn.Linear)
    assert q.quant_spec == spec
    # the float model is not modified (inplace=False) and everything outside the groups is untouched
    assert not quantized_layers(model) and getattr(model, "quant_spec", None) is None
    replaced = {n for n, _ in quantized_layers(q)}
    qmods = dict(q.named_modules())
    for n, m in model.named_modules():
        if n in replaced or any(n.startswith(r + ".") for r in replaced):
            continue
        assert type(qmods[n]) is type(m), n
    for n, m in model.named_modules():
        if isinstance(m, BinaryConv2d):
            assert type(qmods[n]) is BinaryConv2d
            for (pn, p), (_, qp) in zip(m.named_parameters(), qmods[n].named_parameters()):
                assert torch.equal(p, qp), (n, pn)


def test_float_spec_and_table7_first_row_change_nothing(images):
    model = small("bnext18").eval()
    q = quantize(model, "32/32").eval()
    assert not quantized_layers(q) and q.quant_spec == "32/32-32/32-32/32-32/32"
    torch.testing.assert_close(q(images), model(images), rtol=0, atol=0)


def test_quantized_layers_share_parameters_and_keep_state_dict_keys():
    model = small("bnext18")
    q = quantize(model, PAPER_SPEC, inplace=True)
    assert q is model
    keys = set(q.state_dict())
    stem = q.stem[0]
    assert isinstance(stem, QuantConv2d) and "stem.0.weight" in keys and "stem.0.act_quantizer.min_val" in keys
    assert isinstance(q.head.classifier, QuantLinear)
    assert {"head.classifier.weight", "head.classifier.bias", "head.classifier.act_quantizer.max_val"} <= keys


def test_quantize_errors():
    q = quantize(small("bnext18"), PAPER_SPEC)
    with pytest.raises(ValueError, match="already quantized"):
        quantize(q, PAPER_SPEC)
    with pytest.raises(ValueError, match="expected I-S-E-O like 8/8-4/8-4/8-8/8"):
        quantize(small("bnext18"), "8/8-4/8")

    class NoStem(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    with pytest.raises(ValueError, match="no model.stem"):
        quantize(NoStem(), PAPER_SPEC)


def test_info_rcp_off_has_no_se_and_warns():
    model = small("bnext18", info_rcp=False)
    with pytest.warns(UserWarning, match="no SE branch"):
        q = quantize(model, PAPER_SPEC)
    assert group_counts(q) == {"input": 1, "squeeze": 0, "expand": 0, "output": 1, "downsample": 0}


@pytest.mark.parametrize("name", ["bnext18", "real2binary18", "resnet18"])
@pytest.mark.parametrize("spec", [PAPER_SPEC, "8/8-4/4-4/4-8/8-4/8;w=channel;a=channel", "4/32-4/8-4/8-8/8"])
def test_export_round_trip_equals_fake_quant_weight(name, spec):
    q = quantize(small(name), spec)
    layers = quantized_layers(q)
    assert layers
    for _, layer in layers:
        e = layer.export_quantized_weight()
        assert e["q"].dtype == torch.uint8 and e["q"].shape == layer.weight.shape
        assert int(e["q"].max()) <= 2 ** e["bits"] - 1 and e["bits"] == layer.weight_bits
        assert e["scale"].shape == e["offset"].shape == (layer.weight.shape[0],)
        assert e["scale"].dtype == e["offset"].dtype == torch.float32
        w = e["q"].float() * e["scale"].view(-1, *[1] * (layer.weight.dim() - 1)) + e["offset"].view(
            -1, *[1] * (layer.weight.dim() - 1))
        assert torch.equal(w, layer.quantized_weight())
        assert torch.equal(dequantize(e["q"], e["scale"], e["offset"]), layer.quantized_weight())


def test_export_refuses_float_weights():
    q = quantize(small("bnext18"), "32/8-4/8-4/8-8/8")
    with pytest.raises(ValueError, match="float weight"):
        q.stem[0].export_quantized_weight()


def _train_steps(model: nn.Module, images: torch.Tensor, steps: int = 2) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    labels = torch.arange(len(images)) % 10
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("spec", [PAPER_SPEC, "8/8-4/4-4/4-8/8-8/8;a=channel;w=channel"])
def test_save_load_rebuilds_identical_outputs(tmp_path, images, spec):
    q = quantize(small("bnext18"), spec)
    calibrate(q, [images[:8]])
    _train_steps(q, images, steps=1)  # moves weights, BN statistics and the running activation ranges
    q.eval()
    expected = q(images)
    # the packed/trainer flow: bnext.models.save + quantize(create(**spec), quant_spec) + load_state_dict
    models.save(q, tmp_path / "plain.pt")
    ckpt = models.read_checkpoint(tmp_path / "plain.pt")
    rebuilt = quantize(models.create(ckpt["model"], num_classes=ckpt["num_classes"], input_size=ckpt["input_size"],
                                     **ckpt["options"]), q.quant_spec)
    rebuilt.load_state_dict(ckpt["state_dict"])
    assert torch.equal(rebuilt.eval()(images), expected)
    # bnext.quant.save/load keep the spec in the checkpoint
    save(q, tmp_path / "q.pt")
    again = load(tmp_path / "q.pt").eval()
    assert again.quant_spec == q.quant_spec
    assert torch.equal(again(images), expected)


def test_load_reads_trainer_checkpoints(tmp_path, images):
    # bnext.train saves quantized runs with bnext.models.save and the run config in extra
    q = quantize(small("bnext18"), PAPER_SPEC)
    calibrate(q, [images])
    models.save(q, tmp_path / "run.pt", config={"quant": {"spec": PAPER_SPEC, "finetune_epochs": 1}})
    assert torch.equal(load(tmp_path / "run.pt").eval()(images), q.eval()(images))


def test_load_reads_float_checkpoints(tmp_path, images):
    model = small("bnext18").eval()
    models.save(model, tmp_path / "f.pt")
    assert torch.equal(load(tmp_path / "f.pt").eval()(images), model(images))
    with pytest.raises(ValueError, match="no quant_spec"):
        save(model, tmp_path / "g.pt")


def test_eight_bit_everywhere_changes_a_float_network_little(images):
    # a float ResNet-18 with every real layer (I, O and all others as D) at 8/8
    model = small("resnet18")
    _train_steps(model, images, steps=3)
    model.eval()
    q = quantize(model, "8/8-8/8-8/8-8/8-8/8")
    calibrate(q, [images])
    ref, out = model(images), q.eval()(images)
    assert nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0) > 0.999
    assert (ref - out).abs().max() < 0.05 * ref.abs().max()


def test_uncalibrated_eval_warns_and_uses_batch_range(images):
    q = quantize(small("bnext18"), PAPER_SPEC).eval()
    with pytest.warns(UserWarning, match="no calibrated range"):
        out = q(images)
    dyn = quantize(small("bnext18"), PAPER_SPEC + ";range=dynamic").eval()
    assert torch.equal(out, dyn(images))
    assert calibrate(q, [(images, torch.zeros(16))]) == 1
    assert all(m.act_quantizer.calibrated for _, m in quantized_layers(q))


def test_profile_counts_quantized_layers(images):
    model = small("bnext18")
    q = quantize(model, PAPER_SPEC + ";range=dynamic")
    p, pq = profile.count(model, 16), profile.count(q, 16)
    assert pq.bops == p.bops
    macs = {layer.name: layer.macs for layer in p.layers}
    quant = {n for n, _ in quantized_layers(q)}
    assert pq.qops == sum(macs[n] for n in quant)
    assert pq.flops == p.flops - pq.qops  # the 3 downsample convs stay float
    bits = {n: m.weight_bits for n, m in quantized_layers(q)}
    saved = sum(m.weight.numel() * (32 - bits[n]) for n, m in quantized_layers(q))
    assert pq.size_bits == p.size_bits - saved
