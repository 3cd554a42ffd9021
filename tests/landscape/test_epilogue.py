"""Fused conv epilogues of the float fast path (landscape.engine.winograd_epilogue): oneDNN post-ops for the
plain convs, the output transform for the Winograd ones, and the shapes they may fuse."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from landscape.engine.winograd import WINOGRAD, WinogradConv2d, winograd_model
from landscape.engine.winograd_epilogue import ONEDNN_FUSED, OneDNNConv2d, fuse_epilogues

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")


@st.composite
def _conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cin = groups * draw(st.integers(1, 9))
    cout = groups * draw(st.integers(1, 9))
    k = draw(st.sampled_from([1, 2, 3, 5]))
    stride, dil, pad = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(dil * (k - 1) + 1 - 2 * pad, 13).filter(lambda v: v >= 1)), draw(st.integers(3, 11))
    w = max(w, dil * (k - 1) + 1 - 2 * pad)
    return dict(n=draw(st.integers(1, 5)), cin=cin, cout=cout, k=k, stride=stride, dil=dil, pad=pad, h=h, w=w,
                groups=groups, bias=draw(st.booleans()), relu=draw(st.booleans()), residual=draw(st.booleans()),
                cl=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=40, deadline=None)
@given(_conv_cases())
def test_onednn_fused_conv_equals_conv_add_relu(case):
    """Any plain conv (kernel, stride, dilation, padding, groups, bias, memory format) with a fused ReLU and/or
    residual equals conv -> + residual -> ReLU to fp32 rounding, on the fused kernel."""
    g = torch.Generator().manual_seed(case["seed"])
    conv = nn.Conv2d(case["cin"], case["cout"], case["k"], case["stride"], case["pad"], case["dil"],
                     case["groups"], case["bias"]).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    x = torch.randn(case["n"], case["cin"], case["h"], case["w"], generator=g)
    if case["cl"]:
        x = x.contiguous(memory_format=torch.channels_last)
    fused = OneDNNConv2d(conv)
    fused.relu = case["relu"]
    with torch.inference_mode():
        ref = conv(x)
        r = torch.randn(ref.shape, generator=g) if case["residual"] else None
        if r is not None:
            ref = ref + r
        ref = ref.relu() if case["relu"] else ref
        got = fused(x, r) if r is not None else fused(x)
    assert fused.last_algorithm == ONEDNN_FUSED
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_onednn_conv_falls_back_where_it_cannot_fuse():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    fused = OneDNNConv2d(conv)
    fused.relu = True
    x = torch.randn(2, 4, 5, 5)
    b = torch.randn(1, 6, 1, 1)  # broadcast: not a residual
    with torch.no_grad():
        torch.testing.assert_close(fused(x, b), torch.relu(conv(x) + b))
        assert fused.last_algorithm == "torch"
    y = fused(x.requires_grad_())  # autograd: torch's own ops, gradients flow
    assert fused.last_algorithm == "torch" and y.requires_grad
    with pytest.raises(ValueError, match="OneDNNConv2d"):
        OneDNNConv2d(nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"))


class _Block(nn.Module):
    """A ResNet basic block as Li et al.'s tool writes it (``out += shortcut(x)``), BN already folded."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.bn1 = nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out += self.shortcut(x)
        return F.relu(out)


def test_every_block_fuses_and_a_fused_output_can_be_the_next_residual():
    """16-channel blocks fuse as oneDNN post-ops, 32-channel ones in the Winograd output transform (also when the
    residual is the previous block's fused output, whose shape must still be known), the stride-2 block's add
    into its Winograd conv2; the result equals the model."""
    torch.manual_seed(0)
    model = nn.Sequential(_Block(16, 16), _Block(16, 16), _Block(16, 32, 2), _Block(32, 32), _Block(32, 32)).eval()
    x = torch.randn(3, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    wmodel, names = winograd_model(model)
    assert names == ["2.conv2", "3.conv1", "3.conv2", "4.conv1", "4.conv2"]
    fused, n = fuse_epilogues(wmodel, x[:1])
    assert n == 10  # two per block: relu(conv1), relu(conv2 + shortcut)
    mods = dict(fused.named_modules())
    assert all(isinstance(mods[f"{b}.conv{i}"], OneDNNConv2d) for b in (0, 1) for i in (1, 2))
    assert isinstance(mods["2.conv1"], OneDNNConv2d) and isinstance(mods["2.shortcut.0"], nn.Conv2d)
    assert all(mods[k].relu for k in names)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert mods["4.conv2"].last_algorithm == WINOGRAD and mods["0.conv2"].last_algorithm == ONEDNN_FUSED
    assert type(model[0].conv1) is nn.Conv2d  # the model itself is left as it was
    unfused, n = fuse_epilogues(winograd_model(model)[0], x[:1], onednn=False)
    assert n == 5 and not any(isinstance(m, OneDNNConv2d) for m in unfused.modules())
    assert isinstance(dict(unfused.named_modules())["3.conv1"], WinogradConv2d)
