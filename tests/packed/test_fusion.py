"""Packed bits passed straight from one binary conv to the next (BinaryNet-18 blocks)."""

import numpy as np
import torch
from torch import nn

from bnext.packed import load, pack, repack_, save
from bnext.packed.fusion import FusedBinaryBlock, sign_interval

from .conftest import make_model


def test_sign_interval_is_exact_for_bn_and_hardtanh():
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0]))
        bn.bias.copy_(torch.tensor([0.3, 0.1, -1.0, 0.0, 0.5]))
        bn.running_mean.copy_(torch.tensor([2.5, -3.0, 0.0, 7.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.5, 1.0, 1e-3, 1.0]))
    act = nn.Hardtanh()
    k = 9 * 3
    lo, hi = sign_interval(lambda t: act(bn(t)), 5, k)
    y = torch.arange(-k, k + 1, dtype=torch.float32)
    with torch.inference_mode():
        ref = ~(act(bn(y.view(1, 1, 1, -1).expand(1, 5, 1, -1).contiguous())) >= 0)
    got = (torch.from_numpy(lo)[:, None] <= y) & (y <= torch.from_numpy(hi)[:, None])
    assert torch.equal(ref.reshape(5, -1), got)
    assert (lo[2], hi[2]) == (-k, k)  # gamma 0, beta < 0: always -1
    assert lo[4] == np.inf and hi[4] == -np.inf  # gamma 0, beta > 0: never -1
    assert lo[0] == -k and hi[1] == k
    assert sign_interval(lambda t: torch.cos(t), 2, 10) is None  # not an interval


def test_binarynet_blocks_are_fused_and_exact():
    model = make_model("binarynet18", 32, 0.2)
    packed = pack(model)
    fused = [m for m in packed.model.modules() if isinstance(m, FusedBinaryBlock)]
    assert len(fused) == 8
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(packed(x), model(x))
    # other families are left alone
    assert not any(isinstance(m, FusedBinaryBlock) for m in pack(make_model("bireal18", 32, 0.2)).model.modules())
    assert not any(isinstance(m, FusedBinaryBlock) for m in pack(make_model("xnornet18", 32, 0.2)).model.modules())


def test_fused_blocks_with_extreme_bn_and_repack(tmp_path):
    model = make_model("binarynet18", 32, 0.15, seed=2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight[::3] *= -1  # decreasing channels
                m.weight[1::5] = 0.0  # constant channels
                m.running_mean[2::7] += 1e4  # always one sign
    packed = pack(make_model("binarynet18", 32, 0.15, seed=9))
    repack_(packed, model)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
    assert torch.equal(packed(x), ref)
    loaded = load(save(packed, tmp_path / "bn.bnx"))
    assert any(isinstance(m, FusedBinaryBlock) for m in loaded.model.modules())
    assert torch.equal(loaded(x), ref)
    assert set(loaded.model.state_dict()) == set(model.state_dict()) - {
        k for k in model.state_dict() if k.endswith((".conv1.weight", ".conv2.weight", ".tau"))}
