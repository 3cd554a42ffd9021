import pytest
import torch

from bnext.data import build_batch_transform, load_tensors
from bnext.models import create
from bnext.nn import binary_layers, set_tau
from bnext.train import evaluate, train_one_epoch
from bnext.train.data import TensorBatches, epoch_seed
from bnext.train.optim import build_optimizer


@pytest.fixture(scope="module")
def digits8():
    x, y = load_tensors("digits", "train", input_size=8)
    return x[:256].contiguous(), y[:256]


def test_tensor_batches_order_is_a_function_of_seed_and_epoch(digits8):
    x, y = digits8
    b = TensorBatches(x, y, 64, seed=3, augment="standard", pad_value=-1.0)
    a1 = [yy for _, yy in b.epoch(0)]
    a2 = [yy for _, yy in TensorBatches(x, y, 64, seed=3, augment="standard", pad_value=-1.0).epoch(0)]
    assert all(torch.equal(p, q) for p, q in zip(a1, a2))
    assert not torch.equal(torch.cat(a1), torch.cat([yy for _, yy in b.epoch(1)]))
    assert sorted(torch.cat(a1).tolist()) == sorted(y.tolist())
    assert len(b) == 4
    assert epoch_seed(0, 1) != epoch_seed(1, 0)


def test_tensor_batches_shard_the_global_batch(digits8):
    x, y = digits8
    full = list(TensorBatches(x, y, 64, seed=1, augment="standard", pad_value=-1.0).epoch(2))
    parts = [list(TensorBatches(x, y, 64, seed=1, augment="standard", pad_value=-1.0, world_size=2,
                                rank=r).epoch(2)) for r in range(2)]
    for k, (xf, yf) in enumerate(full):
        assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), xf)
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), yf)


def test_crop_flip_is_a_translation_or_mirror():
    b = TensorBatches(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), 2, pad_value=-1.0)
    img = torch.arange(64.0).reshape(1, 1, 8, 8).repeat(2, 1, 1, 1)
    out = b._crop_flip(img, torch.tensor([[1, 1], [0, 2]]), torch.tensor([False, True]))  # pad = 1
    assert torch.equal(out[0], img[0])  # shift (1, 1) = identity
    assert torch.equal(out[1, 0, 1:, :].flip(-1)[:, :7], img[1, 0, :7, 1:])  # up 1 row, left 1 col... mirrored
    assert (out[1, 0, 0] == -1.0).all()


def test_train_one_epoch_learns_and_clamps(digits8):
    x, y = digits8
    torch.manual_seed(0)
    model = create("bnext18", num_classes=10, input_size=8, width=0.125)
    set_tau(model, 0.0)
    with torch.no_grad():
        for _, m in binary_layers(model):
            m.weight.mul_(5000.0)  # push latent weights past the clamp bound
    opt = build_optimizer(model, lr=3e-3)
    batches = list(TensorBatches(x, y, 32, seed=0).epoch(0))
    calls = []
    before = evaluate(model, batches, device="cpu")
    stats = [train_one_epoch(model, batches, opt, device="cpu", epoch=e, step_callback=calls.append)
             for e in range(3)]
    after = evaluate(model, batches, device="cpu")
    assert calls == list(range(8)) * 3
    assert stats[-1]["loss"] < stats[0]["loss"] and after["loss"] < before["loss"]
    assert set(stats[0]) >= {"loss", "top1", "top5", "count", "steps", "seconds"} and stats[0]["count"] == 256
    for _, m in binary_layers(model):
        assert m.weight.abs().max() <= 1.5
    assert set(after) == {"loss", "top1", "top5", "count"} and 0 <= after["top1"] <= after["top5"] <= 100


def test_micro_batches_and_soft_targets(digits8):
    x, y = digits8
    mix = build_batch_transform("mixup", 10)
    torch.manual_seed(0)
    model = create("resnet18", num_classes=10, input_size=8, width=0.125)
    opt = build_optimizer(model)
    out = train_one_epoch(model, [(x[:64], y[:64])], opt, device="cpu", batch_transform=mix, micro_batches=2,
                          max_steps=1, clip_grad=None)
    assert out["steps"] == 1 and out["count"] == 64 and out["loss"] > 0
