import pytest
import torch
import torch.nn.functional as F

from bnext.nn import (
    ApproxSign,
    BinaryConv2d,
    SignSTE,
    binary_layers,
    clip_latent_weights_,
    get_tau,
    make_binarizer,
    set_tau,
    sign,
)


def test_sign_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-12, -1e-12, 3.0])
    assert sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]
    assert SignSTE()(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("clip", [1.0, 1.5])
def test_ste_gradient_is_one_inside_clip_and_zero_outside(clip):
    x = torch.tensor([-3.0, -clip - 1e-3, -clip, -0.2, 0.0, 0.7, clip, clip + 1e-3, 5.0], requires_grad=True)
    SignSTE(clip)(x).sum().backward()
    expected = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert x.grad.tolist() == expected


def test_approx_sign_gradient_is_bireal_polynomial():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.25, 0.999, 1.0, 2.0], requires_grad=True)
    y = ApproxSign()(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1]
    y.sum().backward()
    expected = torch.tensor([0.0, 0.0, 1.0, 2.0, 1.5, 0.002, 0.0, 0.0])
    torch.testing.assert_close(x.grad, expected, atol=1e-6, rtol=0)


def test_make_binarizer_parses_names_and_rejects_unknown():
    assert make_binarizer("ste_sign:1.0").clip == 1.0
    assert make_binarizer("ste_sign").clip == 1.5
    assert isinstance(make_binarizer("approx_sign"), ApproxSign)
    with pytest.raises(ValueError, match="unknown binarizer"):
        make_binarizer("tanh")
    with pytest.raises(ValueError, match="clip"):
        SignSTE(0.0)


def test_progressive_weight_binarization_and_identity_ste():
    conv = BinaryConv2d(2, 3, 3, act_binarizer=None)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-1, 1, conv.weight.numel()).view_as(conv.weight))
    conv.tau.fill_(0.5)
    w = conv.weight
    torch.testing.assert_close(conv.binary_weight(), torch.clamp(w / 0.5, -1, 1))
    assert not conv.is_fully_binary
    # identity straight-through: d(sum(wb * g))/dw = g everywhere
    g = torch.randn_like(w)
    (conv.binary_weight() * g).sum().backward()
    torch.testing.assert_close(conv.weight.grad, g)
    conv.tau.fill_(0.0)
    assert conv.is_fully_binary
    assert set(conv.binary_weight().unique().tolist()) == {-1.0, 1.0}


def test_weight_clip_masks_gradient_and_scales():
    conv = BinaryConv2d(1, 2, 1, padding=0, act_binarizer=None, scale="mean_abs_detached", weight_clip=1.0)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.5]]], [[[-2.0]]]]))
    wb = conv.binary_weight()
    torch.testing.assert_close(wb.flatten(), torch.tensor([0.5, -2.0]))  # sign * mean|W| per channel
    wb.sum().backward()
    # detached alpha: gradient = alpha * 1[|w| <= 1]
    torch.testing.assert_close(conv.weight.grad.flatten(), torch.tensor([0.5, 0.0]))


def test_mean_abs_scale_passes_gradient_to_alpha():
    a = BinaryConv2d(3, 2, 3, act_binarizer=None, scale="mean_abs")
    b = BinaryConv2d(3, 2, 3, act_binarizer=None, scale="mean_abs_detached")
    b.load_state_dict(a.state_dict())
    a.binary_weight().sum().backward()
    b.binary_weight().sum().backward()
    assert not torch.allclose(a.weight.grad, b.weight.grad)


def test_forward_is_conv_of_signs_with_zero_padded_binary_input():
    conv = BinaryConv2d(4, 5, 3, stride=2, shift=True)
    with torch.no_grad():
        conv.shift.normal_()
    x = torch.randn(2, 4, 9, 7)
    ref = F.conv2d(sign(x + conv.shift), sign(conv.weight), stride=2, padding=1)
    torch.testing.assert_close(conv(x), ref)
    assert conv.pad_value == 0.0
    # the border really sees zeros: an all-(+1) input gives fewer than 36 at the corners
    ones = conv.__class__(4, 1, 3, act_binarizer="ste_sign")
    with torch.no_grad():
        ones.weight.fill_(1.0)
    out = ones(torch.ones(1, 4, 5, 5))
    assert out[0, 0, 0, 0].item() == 16.0 and out[0, 0, 2, 2].item() == 36.0


def test_model_helpers_set_tau_and_clip():
    m = torch.nn.Sequential(BinaryConv2d(2, 2), torch.nn.ReLU(), BinaryConv2d(2, 2))
    assert len(list(binary_layers(m))) == 2
    assert set_tau(m, 0.25) == 2 and get_tau(m) == 0.25
    assert "0.tau" in m.state_dict()
    with pytest.raises(ValueError):
        set_tau(m, -1.0)
    with torch.no_grad():
        m[0].weight.fill_(3.0)
    clip_latent_weights_(m, 1.5)
    assert m[0].weight.max().item() == 1.5


def test_eval_weights_are_exactly_plus_minus_one_and_match_training_forward():
    conv = BinaryConv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(1e-3)  # tiny latent weights: w + (sign(w) - w) could round off +-1
        wb_eval = conv.binary_weight()
    assert set(wb_eval.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(conv.binary_weight(), wb_eval, rtol=0, atol=1e-6)
    assert sign(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64
