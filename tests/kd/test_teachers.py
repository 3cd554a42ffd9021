import pytest
import torch
from torchvision.models import get_model

from bnext.kd import Distiller, Teacher, build_teacher, kd_loss, load_state_dict_file
from bnext.kd.losses import gap_sensitive_kd
from bnext.models import create, save


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "mnv3.pth"
    torch.manual_seed(1)
    model = get_model("mobilenet_v3_small", weights=None, num_classes=10)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path, model


def test_torchvision_teacher_from_local_file(tv_weights):
    path, ref = tv_weights
    t = build_teacher("mobilenet_v3_small", path, num_classes=10)
    assert not t.model.training
    assert not any(p.requires_grad for p in t.model.parameters())
    assert t.params == sum(p.numel() for p in ref.parameters())
    assert t.accuracy is None and t.kc is None  # not a Table 8 teacher
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(t.model(x), ref.eval()(x), atol=1e-5)


def test_teacher_errors_are_clear(tv_weights, tmp_path):
    path, _ = tv_weights
    with pytest.raises(FileNotFoundError, match="not found"):
        build_teacher("resnet34", tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="unknown teacher arch"):
        build_teacher("resnet9000", path)
    with pytest.raises(ValueError, match="do not fit torchvision resnet18"):
        build_teacher("resnet18", path, num_classes=10)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="weights_only"):
        load_state_dict_file(tmp_path / "junk.pth")


def test_table8_teacher_has_paper_accuracy(tmp_path):
    model = get_model("efficientnet_b0", weights=None, num_classes=10)
    torch.save(model.state_dict(), tmp_path / "b0.pth")
    t = build_teacher("efficientnet_b0", tmp_path / "b0.pth", num_classes=10)
    assert t.accuracy == pytest.approx(0.7753)


def test_workbench_checkpoint_teacher(tmp_path):
    model = create("resnet18", num_classes=10, input_size=16, width=0.125)
    save(model, tmp_path / "t.pt", best_top1=87.5)
    t = build_teacher(None, tmp_path / "t.pt", num_classes=10)
    assert t.accuracy == pytest.approx(0.875) and t.kc is not None
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(t.model(x), model.eval()(x))
    with pytest.raises(ValueError, match="arch: null"):
        load_state_dict_file(tmp_path / "t.pt")
    with pytest.raises(ValueError, match="predicts 10 classes"):
        build_teacher(None, tmp_path / "t.pt", num_classes=100)


class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: x.shape[0]]


def _teacher(name, logits, acc):
    return Teacher(name, _Fixed(logits), params=int(acc * 1e6), accuracy=acc)


def test_distiller_boosting_order_and_loss():
    g = torch.Generator().manual_seed(0)
    ls = [torch.randn(4, 10, generator=g) for _ in range(4)]
    strong = _teacher("strong", ls[0], 0.8)
    # params = acc * 1e6 * k -> KC increasing in k; give them out of order
    a_hi = Teacher("hi", _Fixed(ls[1]), params=int(9e6), accuracy=0.5)
    a_lo = Teacher("lo", _Fixed(ls[2]), params=int(1e6), accuracy=0.5)
    d = Distiller(strong, [a_hi, a_lo], epochs=10)
    assert [a.name for a in d.assistants] == ["lo", "hi"]
    d.set_epoch(0)
    assert [t.name for t in d.active()] == ["strong", "lo"]
    d.set_epoch(5)
    assert [t.name for t in d.active()] == ["strong", "hi"]
    s = ls[3].clone().requires_grad_(True)
    loss, kd = d(torch.zeros(4, 3, 8, 8), s, torch.zeros(4, dtype=torch.long))
    assert torch.equal(loss, kd)
    assert torch.allclose(kd, gap_sensitive_kd(s, [ls[0], ls[1]]))
    # one teacher: standard KD; hard-label term added
    d1 = Distiller(strong, [], epochs=3, hard_weight=0.5, temperature=2.0)
    y = torch.arange(4)
    loss, kd = d1(torch.zeros(4, 3, 8, 8), s, y)
    assert torch.allclose(kd, kd_loss(s, ls[0], 2.0))
    assert torch.allclose(loss, kd + 0.5 * torch.nn.functional.cross_entropy(s, y))
    with pytest.raises(ValueError, match="accuracy unknown"):
        Distiller(strong, [Teacher("x", _Fixed(ls[1]), 1, None), a_lo], epochs=3)
