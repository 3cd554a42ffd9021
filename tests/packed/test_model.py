"""Exactness of packed zoo models against the simulated (float +-1) models."""

import copy

import pytest
import torch
from torch import nn

from bnext.data.digits import load_digits_tensors
from bnext.models import create
from bnext.nn import BinaryConv2d, binary_layers
from bnext.packed import PackedBinaryConv2d, PackedModel, PackingError, pack, repack_

from .conftest import make_model, rel_diff

UNSCALED = ["binarynet18", "real2binary18", "bnext18", "bnext_t", "bnext_s", "bnext_m", "bnext_l"]
SCALED = ["xnornet18", "bireal18"]


def _check(model: nn.Module, x: torch.Tensor, exact: bool) -> None:
    with torch.inference_mode():
        ref = model(x)
    packed = pack(model)
    out = packed(x)
    assert out.shape == ref.shape
    assert rel_diff(ref, out) <= 1e-4
    assert torch.equal(ref.argmax(1), out.argmax(1))
    if exact:
        assert torch.equal(ref, out), "unscaled models run bit-identically"


@pytest.mark.parametrize("name", UNSCALED + SCALED)
def test_zoo_small_input_odd_channels(name):
    # width 0.2: 13/26/51/102 channels (BNext-T: 6..205), 32x32 stem, stride-2 stages, 1x1 convs
    model = make_model(name, 32, 0.1 if name in ("bnext_m", "bnext_l") else 0.2)
    x = torch.randn(3, 3, 32, 32)
    _check(model, x, exact=name in UNSCALED)


@pytest.mark.slow
@pytest.mark.parametrize("name", UNSCALED + SCALED)
def test_zoo_imagenet_stem(name):
    model = make_model(name, 96, 0.05 if name in ("bnext_m", "bnext_l") else 0.1, num_classes=20, seed=1)
    x = torch.randn(2, 3, 96, 96)
    _check(model, x, exact=name in UNSCALED)


def test_bnext18_224_tiny_width():
    model = make_model("bnext18", 224, 0.05, num_classes=7, seed=2)
    _check(model, torch.randn(1, 3, 224, 224), exact=True)


def test_ablation_variants_pack():
    for opts in ({"info_rcp": False}, {"elm_attention": False}):
        model = make_model("bnext_t", 32, 0.25, **opts)
        _check(model, torch.randn(2, 3, 32, 32), exact=True)


def test_identical_top1_on_digits_test_set():
    x, _ = load_digits_tensors("test", input_size=32)
    model = make_model("bnext18", 32, 0.25, seed=3)
    with torch.inference_mode():
        ref = model(x.contiguous())
    out = pack(model)(x)
    assert torch.equal(ref.argmax(1), out.argmax(1))
    assert torch.equal(ref, out)


def test_pack_replaces_only_binary_layers_and_leaves_source_untouched(tiny_bnext18):
    before = copy.deepcopy(tiny_bnext18.state_dict())
    packed = pack(tiny_bnext18)
    assert isinstance(packed, PackedModel)
    names = [n for n, _ in binary_layers(tiny_bnext18)]
    assert [n for n, _ in packed.packed_layers()] == names
    assert not any(isinstance(m, BinaryConv2d) for m in packed.model.modules())
    assert all(isinstance(packed.model.get_submodule(n), PackedBinaryConv2d) for n in names)
    after = tiny_bnext18.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert packed.spec == tiny_bnext18.spec
    packed.train()
    assert not packed.training and not packed.model.training


def test_refuses_model_without_spec_or_not_binary():
    model = make_model("bnext18", 32, 0.1)
    model.blocks[0][0].conv.tau.fill_(0.3)
    with pytest.raises(PackingError, match="not fully binarized"):
        pack(model)
    bare = nn.Sequential(BinaryConv2d(3, 4, 3))
    with pytest.raises(PackingError, match=r"no \.spec"):
        pack(bare)
    with pytest.raises(PackingError, match="no BinaryConv2d"):
        pack(create("resnet18", num_classes=10, input_size=32, width=0.1))


def test_repack_refreshes_weights_in_place():
    a = make_model("bnext18", 32, 0.2, seed=0)
    b = make_model("bnext18", 32, 0.2, seed=5)
    packed = pack(a)
    x = torch.randn(2, 3, 32, 32)
    assert repack_(packed, b) is packed
    with torch.inference_mode():
        assert torch.equal(packed(x), b(x))
    other = make_model("bnext18", 32, 0.1)
    with pytest.raises(PackingError):
        repack_(packed, other)


def test_batch_one_and_batch_many_match_simulated():
    model = make_model("bnext_t", 32, 0.2)
    packed = pack(model)
    x = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        for xs in (x, x[:1], x[3:]):
            assert torch.equal(packed(xs), model(xs))


def test_weight_bytes_are_one_bit():
    model = make_model("bnext18", 32, 0.25)
    packed = pack(model)
    n_binary = sum(m.weight.numel() for _, m in binary_layers(model))
    mem = packed.weight_bytes()
    assert mem["binary"] == sum((m.weight.numel() + 7) // 8 for _, m in binary_layers(model))
    assert mem["binary"] * 8 < n_binary + 8 * len(list(binary_layers(model)))
    assert mem["binary"] <= mem["binary_held"] < 4 * mem["binary"]  # 16/32-channel layers pad words
    for _, layer in packed.packed_layers():
        assert layer.signs.dtype == bool and layer.signs.shape == (layer.out_channels, layer.in_channels,
                                                                    layer.kernel_size, layer.kernel_size)
