"""Eq. 5 / Eq. 6 quantizers against direct computations (paper section 7.5)."""

from __future__ import annotations

import pytest
import torch

from bnext.quant import ActQuantizer, WeightQuantizer, dequantize, eq6_codes, fake_quantize, fake_quantize_weight


def eq5_direct(x: torch.Tensor, n: int) -> torch.Tensor:
    alpha = (2**n - 1) / (x.max() - x.min())
    beta = x.min()
    return torch.round((x - beta) * alpha) / alpha + beta


def test_eq5_known_values():
    x = torch.tensor([-1.0, -0.3, 0.0, 0.26, 1.0])
    # n = 2: alpha = 3 / 2, levels -1, -1/3, 1/3, 1
    got = fake_quantize(x, x.min(), x.max(), 2)
    expected = torch.tensor([-1.0, -1 / 3, 1 / 3, 1 / 3, 1.0])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, eq5_direct(x, 2))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_eq5_matches_direct_formula(bits):
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(bits)) * 3 + 0.5
    got = ActQuantizer(bits, mode="dynamic")(x)
    torch.testing.assert_close(got, eq5_direct(x, bits), rtol=0, atol=1e-6)
    assert got.unique().numel() <= 2**bits
    assert float(got.min()) == pytest.approx(float(x.min())) and float(got.max()) == pytest.approx(float(x.max()))


def test_eq5_degenerate_range_returns_input():
    x = torch.full((2, 3, 4, 4), 0.7)
    for mode in ("dynamic", "calibrated"):
        q = ActQuantizer(8, mode=mode).train()
        out = q(x)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, x)
    # calibrated on a constant: eval returns that constant (a 0-level code), never NaN
    q = ActQuantizer(8)
    q.min_val.fill_(0.7)
    q.max_val.fill_(0.7)
    out = q.eval()(torch.tensor([0.0, 0.7, 2.0]))
    torch.testing.assert_close(out, torch.full((3,), 0.7))


def test_eq5_per_channel_and_degenerate_channel():
    x = torch.randn(8, 3, 4, 4)
    x[:, 1] = -2.0  # constant channel
    got = ActQuantizer(4, 3, granularity="channel", mode="dynamic")(x)
    for c in range(3):
        xc = x[:, c]
        expected = xc if c == 1 else eq5_direct(xc, 4)
        torch.testing.assert_close(got[:, c], expected, rtol=0, atol=1e-6)


def test_ste_gradient_inside_clip_range_only():
    x = torch.tensor([-2.0, -0.5, 0.1, 0.9, 3.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(-1.0), torch.tensor(1.0), 4)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert y[0] == -1.0 and y[-1] == 1.0  # clipped to the range
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    (fake_quantize_weight(w, 4) * torch.arange(4.0).view(4, 1, 1, 1)).sum().backward()
    torch.testing.assert_close(w.grad, torch.arange(4.0).view(4, 1, 1, 1).expand_as(w))


def test_calibrated_quantizer_observes_then_clips():
    q = ActQuantizer(8)
    assert not q.calibrated
    q.observing = True
    a, b = torch.tensor([0.0, 1.0]), torch.tensor([-3.0, 0.5])
    assert torch.equal(q(a), a) and torch.equal(q(b), b)  # pass-through while observing
    q.observing = False
    assert q.calibrated and float(q.min_val) == -3.0 and float(q.max_val) == 1.0
    out = q.eval()(torch.tensor([-5.0, 0.25, 9.0]))
    assert out[0] == -3.0 and out[2] == 1.0
    # training mode: batch range, running average of the buffers
    q.train()(torch.tensor([-1.0, 3.0]))
    assert float(q.min_val) == pytest.approx(-3.0 + 0.1 * 2.0) and float(q.max_val) == pytest.approx(1.2)


def eq6_direct(w: torch.Tensor, n: int) -> torch.Tensor:
    norm = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    s = w / norm
    alpha = (2**n - 1) / (s.max() - s.min())
    beta = s.min()
    return (torch.round((s - beta) * alpha) / alpha + beta) * norm


@pytest.mark.parametrize("bits", [4, 8])
def test_eq6_matches_direct_formula(bits):
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(bits)) * torch.linspace(0.1, 2, 6).view(
        6, 1, 1, 1)
    got = fake_quantize_weight(w, bits)
    torch.testing.assert_close(got, eq6_direct(w, bits), rtol=1e-5, atol=1e-6)
    assert torch.equal(got, WeightQuantizer(bits)(w))


def test_eq6_known_values_and_codes():
    # one channel [-2, -1, 1, 2]: Norm = 1.5, scaled = [-4/3, -2/3, 2/3, 4/3]; n = 2 -> alpha = 9/8
    w = torch.tensor([[-2.0, -1.0, 1.0, 2.0]])
    q, scale, offset = eq6_codes(w, 2)
    assert q.tolist() == [[0.0, 1.0, 2.0, 3.0]]  # round(0), round(0.75), round(2.25), round(3)
    torch.testing.assert_close(scale, torch.tensor([1.5 / (9 / 8)]))
    torch.testing.assert_close(offset, torch.tensor([-2.0]))
    torch.testing.assert_close(dequantize(q, scale, offset), torch.tensor([[-2.0, -2 / 3, 2 / 3, 2.0]]))


def test_eq6_per_channel_and_degenerate_channels():
    w = torch.randn(4, 8)
    w[1] = 0.0  # all-zero channel: Norm would be 0
    w[2] = 0.3  # constant channel: max == min after scaling
    for gran in ("tensor", "channel"):
        got = fake_quantize_weight(w, 4, gran)
        assert torch.isfinite(got).all()
        assert torch.equal(got[1], torch.zeros(8))  # rescaled by Norm = 0
    # per tensor the constant channel lands on the layer's grid (within half a step of Norm-scaled units)
    scaled = w / w.abs().mean(1, keepdim=True).clamp_min(1e-12)
    step = float(scaled.max() - scaled.min()) / 15
    assert (fake_quantize_weight(w, 4, "tensor")[2] - w[2]).abs().max() <= 0.5 * step * 0.3 + 1e-6
    # per channel it is a degenerate range: returned as is
    torch.testing.assert_close(fake_quantize_weight(w, 4, "channel")[2], w[2])
    # per channel: Eq. 5 min/max per output channel of the scaled weight
    got = fake_quantize_weight(w, 4, "channel")
    for c in (0, 3):
        norm = w[c].abs().mean()
        torch.testing.assert_close(got[c], eq5_direct(w[c] / norm, 4) * norm, rtol=1e-5, atol=1e-6)


def test_codes_are_integers_in_range():
    w = torch.randn(5, 3, 3, 3)
    for bits in (2, 4, 8):
        q, scale, offset = eq6_codes(w, bits)
        assert torch.equal(q, q.round()) and q.min() >= 0 and q.max() == 2**bits - 1
        assert scale.shape == offset.shape == (5,)
        assert torch.equal(dequantize(q, scale, offset), fake_quantize_weight(w, bits))
