import pytest
import torch
from torch import nn

from bnext import models
from bnext.models.bnext import InfoRCPModule
from bnext.nn import BinaryConv2d, SqueezeExpand, binary_layers

ZOO = ["resnet18", "binarynet18", "xnornet18", "bireal18", "real2binary18",
       "bnext18", "bnext_t", "bnext_s", "bnext_m", "bnext_l"]
BINARY = [n for n in ZOO if n != "resnet18"]


def test_registry_lists_the_whole_zoo():
    assert models.list_models() == sorted(ZOO)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("size", [32, 224])
def test_forward_shapes(name, size):
    model = models.create(name, num_classes=7, input_size=size, width=0.125).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", BINARY)
def test_backward_reaches_every_latent_weight(name):
    model = models.create(name, num_classes=10, input_size=32, width=0.25).train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    layers = list(binary_layers(model))
    assert layers, "a binary model must contain BinaryConv2d layers"
    for lname, layer in layers:
        g = layer.weight.grad
        assert g is not None and torch.isfinite(g).all(), lname
    assert sum(float(layer.weight.grad.abs().sum()) for _, layer in layers) > 0


@pytest.mark.parametrize("name", ZOO)
def test_first_and_last_layers_are_real(name):
    model = models.create(name, input_size=224, width=0.125)
    first = next(m for m in model.stem.modules() if isinstance(m, (nn.Conv2d, BinaryConv2d)))
    assert type(first) is nn.Conv2d
    assert type(model.head.classifier) is nn.Linear
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(not isinstance(m, BinaryConv2d) for m in convs)  # binary convs are never nn.Conv2d


def _signature(model):
    return (
        sum(isinstance(m, InfoRCPModule) and m.elm for m in model.modules()),
        sum(isinstance(m, SqueezeExpand) for m in model.modules()),
        sum(p.numel() for p in model.parameters()),
    )


@pytest.mark.parametrize("name", ["bnext18", "bnext_t"])
def test_four_ablation_cells_differ_structurally(name):
    cells = {
        (rcp, elm): models.create(name, num_classes=10, input_size=32, width=0.25, info_rcp=rcp, elm_attention=elm)
        for rcp in (True, False)
        for elm in (True, False)
    }
    sigs = {k: _signature(m) for k, m in cells.items()}
    assert len(set(sigs.values())) == 4
    assert sigs[(True, True)][0] > 0 and sigs[(True, False)][0] == 0
    assert sigs[(False, True)][1] == 0 and sigs[(True, True)][1] > 0


def test_bnext_t_alternates_elm_and_all_strided_blocks_are_elm():
    model = models.create("bnext_t", input_size=224, width=0.25)
    blocks = list(model.blocks)
    assert len(blocks) == 13
    for i, block in enumerate(blocks, start=1):
        assert block.spatial.elm == (i % 2 == 0)
        if block.spatial.conv.stride == 2:
            assert block.spatial.elm
    widths = [b.spatial.conv.in_channels for b in blocks] + [model.head.classifier.in_features]
    c = widths[0]
    assert widths[1] == 2 * c and widths[-1] == 32 * c


def test_save_load_round_trip(tmp_path):
    model = models.create("bnext18", num_classes=10, input_size=32, width=0.25, elm_attention=False).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    path = models.save(model, tmp_path / "m.pt", epoch=3)
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == "bnext18" and raw["options"]["elm_attention"] is False and raw["extra"]["epoch"] == 3
    again = models.load(path).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_load_rejects_foreign_and_mismatched_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(models.CheckpointError, match="not a workbench checkpoint"):
        models.load(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(models.CheckpointError, match="not a readable workbench checkpoint"):
        models.load(garbage)
    with pytest.raises(models.CheckpointError, match="does not exist"):
        models.load(tmp_path / "missing.pt")
    path = models.save(models.create("bireal18", num_classes=10, input_size=32, width=0.25), tmp_path / "b.pt")
    with pytest.raises(models.CheckpointError, match="expected 'bnext18'"):
        models.load(path, expected_model="bnext18")


def test_create_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown model 'bnext_xl'.*bnext_t"):
        models.create("bnext_xl")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['elm'\].*elm_attention"):
        models.create("bnext_t", elm=False)
    with pytest.raises(ValueError, match="width"):
        models.create("bireal18", width=0)
