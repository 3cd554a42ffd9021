"""Winograd F(4x4, 3x3) convolutions of the float fast path (landscape.engine.winograd) and their use by the engine."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.directions import random_directions
from landscape.engine import TOLERANCE, SurfaceEngine
from landscape.engine.winograd import (
    TORCH,
    WINOGRAD,
    WinogradConv2d,
    choose_algorithm,
    winograd_conv2d,
    winograd_model,
    winograd_weights,
)

#: stated fp32 bound: max |winograd - direct| <= WINO_RTOL * max |direct| (measured ~1e-5 up to 512 channels)
WINO_RTOL = 1e-4


def _close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape
    err = float((got - ref).abs().max())
    assert err <= WINO_RTOL * float(ref.abs().max()), err


@pytest.mark.parametrize(
    "n, cin, cout, h, w, pad, bias",
    [
        (1, 5, 7, 9, 13, 1, True),  # odd sizes, not multiples of 4, batch 1
        (3, 33, 35, 6, 7, 0, False),  # no padding, odd channel counts
        (2, 8, 3, 5, 4, 2, True),  # padding 2 (output larger than the input)
        (2, 16, 16, 3, 2, 1, False),  # smaller than one tile
        (4, 64, 32, 16, 16, 1, True),
    ],
)
def test_equals_conv2d_on_odd_shapes(n, cin, cout, h, w, pad, bias):
    g = torch.Generator().manual_seed(cin * 100 + cout)
    x = torch.randn(n, cin, h, w, generator=g)
    wt = torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin**0.5)
    b = torch.randn(cout, generator=g) if bias else None
    ref = F.conv2d(x, wt, b, 1, pad)
    u = winograd_weights(wt)
    got = winograd_conv2d(x, u, b, pad)
    _close(got, ref)
    assert got.is_contiguous(memory_format=torch.channels_last)
    _close(winograd_conv2d(x, u, b, pad, relu=True), ref.relu())
    # tiny chunks (several chunks and worker threads) and channels-last input give the same
    _close(winograd_conv2d(x.contiguous(memory_format=torch.channels_last), u, b, pad, chunk_bytes=1), ref)


def test_bad_inputs_are_refused():
    u = winograd_weights(torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="do not fit"):
        winograd_conv2d(torch.randn(1, 5, 8, 8), u)
    with pytest.raises(ValueError, match="float32"):
        winograd_conv2d(torch.randn(1, 3, 8, 8, dtype=torch.float64), u)
    with pytest.raises(ValueError, match="3, 3"):
        winograd_weights(torch.randn(4, 3, 5, 5))


def test_rule_by_shape():
    assert choose_algorithm(nn.Conv2d(32, 32, 3, padding=1)) == WINOGRAD
    assert choose_algorithm(nn.Conv2d(32, 32, 3, padding=1), (8, 32, 16, 16)) == WINOGRAD
    assert choose_algorithm(nn.Conv2d(32, 32, 3, padding=1), (8, 32, 2, 2)) == TORCH  # 4x4 tile mostly empty
    assert choose_algorithm(nn.Conv2d(3, 64, 3, padding=1)) == TORCH  # thin input
    assert choose_algorithm(nn.Conv2d(64, 64, 3, stride=2, padding=1)) == TORCH
    assert choose_algorithm(nn.Conv2d(64, 64, 3, padding=1, dilation=2)) == TORCH
    assert choose_algorithm(nn.Conv2d(64, 64, 3, padding=1, groups=2)) == TORCH
    assert choose_algorithm(nn.Conv2d(64, 64, 1)) == TORCH
    assert choose_algorithm(nn.Conv2d(64, 64, 3, padding=1, padding_mode="reflect")) == TORCH

    class Sub(nn.Conv2d):
        pass

    assert choose_algorithm(Sub(64, 64, 3, padding=1)) == TORCH
    net = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), Sub(32, 32, 3, padding=1))
    assert winograd_model(net) == (net, [])  # models with conv subclasses (binary) keep torch


def test_transformed_weights_are_never_stale():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 40, 3, padding=1)
    wc = WinogradConv2d(conv)
    x = torch.randn(2, 32, 9, 9)
    with torch.inference_mode():
        _close(wc(x), conv(x))
        assert wc.last_algorithm == WINOGRAD
    # the engine's pattern: .data rebound to a view of a flat buffer, then the buffer written in place
    flat = torch.zeros(conv.weight.numel())
    conv.weight.data = flat.view(conv.weight.shape)
    with torch.inference_mode():
        torch.mul(torch.randn(flat.numel()), 0.1, out=flat)
        _close(wc(x), F.conv2d(x, conv.weight, conv.bias, 1, 1))
        flat.add_(0.5)  # no version counter of the parameter moves
        _close(wc(x), F.conv2d(x, conv.weight, conv.bias, 1, 1))
        conv.weight.data.mul_(-2.0)
        conv.bias.data.add_(1.0)
        _close(wc(x), F.conv2d(x, conv.weight, conv.bias, 1, 1))
    # autograd or other dtypes go to the conv itself
    y = wc(x.requires_grad_())
    assert wc.last_algorithm == TORCH and y.requires_grad


def _resnet18(width: float) -> nn.Module:
    bnext_models = pytest.importorskip("bnext.models")
    torch.manual_seed(0)
    model = bnext_models.create("resnet18", num_classes=10, input_size=32, width=width)
    x = torch.randn(64, 3, 32, 32)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
        model(x)
    return model.eval()


def test_engine_defaults_on_resnet18_keep_the_contract_and_exact_never_uses_winograd():
    model = _resnet18(0.5)  # 32..256 channels: every stage has Winograd convs
    g = torch.Generator().manual_seed(1)
    data = {"train": (torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g))}
    d = random_directions(model, seed=0, normalization="filter", bias_bn="ignore")
    points = [(0.0, 0.0), (0.5, -0.5), (-1.0, 1.0)]
    with SurfaceEngine(model, d, data) as fast:
        algos = fast.settings["conv_algorithms"]
        got = [fast.evaluate(*p) for p in points]
        assert any(isinstance(m, WinogradConv2d) for m in fast._forward.modules())
    assert algos["blocks.0.conv1"] == WINOGRAD and algos["blocks.7.conv2"] == WINOGRAD
    assert algos["stem.0"] == TORCH and algos["blocks.2.conv1"] == TORCH  # thin input; stride 2
    with SurfaceEngine(model, d, data, exact=True) as exact:
        assert set(exact.settings["conv_algorithms"].values()) == {TORCH}
        assert not any(isinstance(m, WinogradConv2d) for m in exact._forward.modules())
        want = [exact.evaluate(*p) for p in points]
    for a, b in zip(got, want):
        assert abs(a["train_loss"] - b["train_loss"]) <= TOLERANCE["loss_rel"] * abs(b["train_loss"])
        assert abs(a["train_acc"] - b["train_acc"]) <= TOLERANCE["acc_points"]
    assert len({round(r["train_loss"], 6) for r in got}) == 3  # the points differ: weights were refreshed
    with pytest.raises(ValueError, match="winograd"):
        SurfaceEngine(model, d, data, exact=True, winograd=True)
    with SurfaceEngine(model, d, data, winograd=False) as off:
        assert set(off.settings["conv_algorithms"].values()) == {TORCH}
        np.testing.assert_allclose(off.evaluate(*points[1])["train_loss"], want[1]["train_loss"], rtol=1e-5)


class _Res(nn.Module):
    """relu(conv2(relu(conv1(x))) + x), with F.relu and an in-place add, and a conv used twice."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.Identity()  # a folded BN
        self.conv3 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.bn(self.conv2(out))
        out += x
        out = F.relu(out)
        y = self.conv3(out)
        return y + torch.relu(y)  # conv3's output has two users: not fused


def test_epilogues_fuse_relu_and_residual_add():
    from landscape.engine.winograd_epilogue import fuse_epilogues

    torch.manual_seed(0)
    model = _Res().eval()
    wmodel, names = winograd_model(model)
    assert names == ["conv1", "conv2", "conv3"]
    fused, n = fuse_epilogues(wmodel)
    assert n == 2 and fused.conv1.relu and fused.conv2.relu and not fused.conv3.relu
    x = torch.randn(2, 32, 10, 11)
    with torch.inference_mode():
        _close(fused(x), model(x))
        assert fused.conv2.last_algorithm == WINOGRAD
    with torch.no_grad():  # the torch fallback (autograd off, float64) applies the same epilogues
        x64 = x.double()
        torch.testing.assert_close(fused.double()(x64), model.double()(x64))


class _Offset(nn.Module):
    """``relu(conv(x) + b)`` with a learned (1, C, 1, 1) offset: a broadcasting add, not a residual."""

    def __init__(self, c: int = 32, first: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Parameter(torch.randn(1, c, 1, 1))
        self.first = first
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.b + self.conv(h)) if self.first else torch.relu(self.conv(h) + self.b)
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("first", [False, True])
def test_broadcasting_add_after_a_conv_is_not_fused_as_a_residual(first):
    """Regression (issue 20, case 5): the epilogue fusion took ``conv(x) + b`` with ``b`` (1, C, 1, 1) for a
    residual and ``winograd_conv2d`` raised at set-up; the exact path worked."""
    from landscape.engine.winograd_epilogue import fuse_epilogues

    torch.manual_seed(0)
    model = _Offset(first=first).eval()
    x = torch.randn(8, 3, 12, 12)
    wmodel, names = winograd_model(model)
    assert names == ["conv"]
    fused, n = fuse_epilogues(wmodel, x[:2], onednn=False)  # shapes known: the add is not fused, nor the ReLU
    assert n == 0
    blind, _ = fuse_epilogues(winograd_model(model)[0], onednn=False)  # shapes unknown: fused, checked at every call
    with torch.inference_mode():
        _close(blind(x), model(x))
        assert blind.conv.last_algorithm == WINOGRAD
    data = {"train": (x, torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1)))}
    d = random_directions(model, seed=0)
    with SurfaceEngine(model, d, data) as fast:
        assert fast.settings["conv_algorithms"]["conv"] == WINOGRAD
        got = [fast.evaluate(a) for a in (-1.0, 0.0, 0.5)]
    with SurfaceEngine(model, d, data, exact=True, forward="torch") as exact:
        want = [exact.evaluate(a) for a in (-1.0, 0.0, 0.5)]
    for a, b in zip(got, want):
        assert abs(a["train_loss"] - b["train_loss"]) <= TOLERANCE["loss_rel"] * abs(b["train_loss"])
        assert abs(a["train_acc"] - b["train_acc"]) <= TOLERANCE["acc_points"]
