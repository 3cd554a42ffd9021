"""Per-layer exactness of the XNOR-popcount kernel against float +-1 convolutions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnext.nn import BinaryConv2d, sign
from bnext.packed import PackedBinaryConv2d, PackingError, kernels
from bnext.packed.bits import pack_signs, popcount_words
from bnext.packed.kernels import set_threads

CASES = [
    # cin, cout, k, stride, h, w, batch
    (1, 1, 3, 1, 5, 5, 1),
    (13, 27, 3, 1, 9, 7, 2),
    (27, 13, 3, 2, 8, 8, 1),
    (64, 64, 3, 1, 6, 6, 1),
    (65, 70, 3, 2, 11, 12, 3),
    (130, 33, 3, 2, 7, 7, 2),
    (27, 13, 1, 1, 5, 6, 2),
    (70, 100, 1, 2, 7, 9, 2),
    (256, 256, 3, 1, 14, 14, 1),
    (32, 16, 3, 1, 2, 3, 1),
]


def _layer(cin, cout, k, stride, scale="none", shift=False, seed=0):
    torch.manual_seed(seed)
    layer = BinaryConv2d(cin, cout, k, stride, scale=scale, shift=shift).eval()
    with torch.no_grad():
        if shift:
            layer.shift.normal_()
        layer.weight.view(-1)[::7] = 0.0  # sign(0) = +1 must pack to a clear bit
    return layer


@pytest.mark.parametrize("cin,cout,k,stride,h,w,batch", CASES)
def test_kernel_matches_float_conv_with_zero_padding(cin, cout, k, stride, h, w, batch):
    layer = _layer(cin, cout, k, stride)
    x = torch.randn(batch, cin, h, w)
    x.view(-1)[::11] = 0.0  # sign(0) = +1
    ref = F.conv2d(sign(x), sign(layer.weight), None, stride, k // 2)  # zero-padded +-1 conv
    packed = PackedBinaryConv2d.from_layer(layer)
    with torch.inference_mode():
        out = packed(x)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)


def test_kernel_matches_popcount_oracle_without_border():
    """Interior outputs equal K - 2 * popcount(x XOR w) computed with np.bitwise_count."""
    cin, cout, k = 70, 5, 3
    layer = _layer(cin, cout, k, 1)
    x = torch.randn(1, cin, 6, 6)
    xb = pack_signs((x[0] < 0).permute(1, 2, 0).numpy())  # (H, W, words)
    wb = pack_signs((layer.weight < 0).permute(0, 2, 3, 1).numpy())  # (O, k, k, words)
    packed = PackedBinaryConv2d.from_layer(layer)
    out = packed(x)[0]
    for o in range(cout):
        for i in range(1, 5):
            for j in range(1, 5):
                patch = xb[i - 1:i + 2, j - 1:j + 2]
                expected = k * k * cin - 2 * int(popcount_words(patch ^ wb[o]).sum())
                assert out[o, i, j].item() == expected


@pytest.mark.parametrize("scale", ["mean_abs", "mean_abs_detached"])
def test_scaled_layer_close_to_simulated(scale):
    layer = _layer(40, 24, 3, 2, scale=scale, shift=True)
    x = torch.randn(2, 40, 9, 9)
    with torch.inference_mode():
        ref = layer(x)
        out = PackedBinaryConv2d.from_layer(layer)(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_shift_is_added_before_sign_exactly():
    layer = _layer(20, 8, 3, 1, shift=True)
    x = torch.randn(1, 20, 7, 7)
    with torch.no_grad():
        x[0, :, 3, 3] = -layer.shift.view(-1)  # x + shift == 0 exactly -> +1
    with torch.inference_mode():
        assert torch.equal(PackedBinaryConv2d.from_layer(layer)(x), layer(x))


@pytest.mark.parametrize("cin,cout,k,stride,h,batch",
                         [(96, 40, 3, 1, 10, 2), (64, 200, 3, 2, 9, 1), (70, 48, 1, 1, 6, 3)])
def test_serial_and_parallel_kernels_agree(cin, cout, k, stride, h, batch):
    packed = PackedBinaryConv2d.from_layer(_layer(cin, cout, k, stride))
    x = torch.randn(batch, cin, h, h)
    xp = packed.pack_input(x.numpy())
    shape = packed.output_shape(batch, h, h)
    corr = kernels.border_correction(packed.tapsum, k, stride, k // 2, h, h, shape[2], shape[3])
    outs = []
    for threads in (1, 2):
        out = np.full(shape, np.nan, np.float32)
        kernels.binary_conv(xp, packed.wt, k, stride, k // 2, k * k * cin, packed.alpha_pad, corr, out, threads)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], F.conv2d(sign(x), sign(packed_weight(packed)), None, stride, k // 2))


def packed_weight(packed: PackedBinaryConv2d) -> torch.Tensor:
    return torch.from_numpy(np.where(packed.signs, -1.0, 1.0).astype(np.float32))


def test_parallel_input_packing_matches_serial():
    x = np.random.default_rng(0).standard_normal((4, 70, 50, 50)).astype(np.float32)  # above PARALLEL_PACK_MIN
    assert x.size >= kernels.PARALLEL_PACK_MIN
    shift = np.random.default_rng(1).standard_normal(70).astype(np.float32)
    a = np.zeros((4, 52, 52, 2), np.uint64)
    b = np.zeros_like(a)
    kernels.pack_input(x, shift, True, 1, a)
    kernels._pack_input_serial(x, shift, True, 1, b)
    np.testing.assert_array_equal(a, b)
    c = np.zeros_like(a)
    kernels._pack_input_parallel(x, shift, True, 1, c)  # the row-parallel variant, whatever the thread count
    np.testing.assert_array_equal(c, b)
    expected = pack_signs(np.transpose(~(x + shift[None, :, None, None] >= 0), (0, 2, 3, 1)))
    np.testing.assert_array_equal(a[:, 1:-1, 1:-1], expected)
    assert not a[:, 0].any() and not a[:, -1].any() and not a[:, :, 0].any() and not a[:, :, -1].any()


def test_thread_chooser_settles_and_keeps_results():
    chooser = kernels.ThreadChooser()
    calls = []
    for _ in range(40):
        chooser.run(("k",), 2, calls.append)
    assert set(calls) == {1, 2} and chooser.choice(("k",)) in ("serial", "parallel")
    one = []
    kernels.ThreadChooser().run(("k",), 1, one.append)
    assert one == [1]
    try:
        set_threads(2)
        packed = PackedBinaryConv2d.from_layer(_layer(64, 32, 3, 1))
        x = torch.randn(1, 64, 12, 12)
        first = packed(x)
        assert all(torch.equal(packed(x), first) for _ in range(6))
    finally:
        set_threads(2)


def test_refuses_layer_not_fully_binary():
    layer = BinaryConv2d(8, 8, 3)
    layer.tau.fill_(0.5)
    with pytest.raises(PackingError, match="not fully binarized"):
        PackedBinaryConv2d.from_layer(layer, "blocks.0.conv")
    real_in = BinaryConv2d(8, 8, 3, act_binarizer=None)
    with pytest.raises(PackingError, match="real-valued inputs"):
        PackedBinaryConv2d.from_layer(real_in)


def test_packed_weight_bytes():
    layer = _layer(13, 27, 3, 1)
    packed = PackedBinaryConv2d.from_layer(layer)
    assert packed.packed_bytes == (13 * 27 * 9 + 7) // 8
    np.testing.assert_array_equal(packed.signs, (layer.weight < 0).numpy())


@pytest.mark.parametrize("shape,k,s,p", [((1, 64, 30, 30), 3, 2, 1), ((2, 5, 7, 9), 3, 2, 1), ((1, 3, 8, 8), 2, 2, 0)])
def test_maxpool_matches_torch_including_nan_and_inf(shape, k, s, p):
    from bnext.packed.layers import PackedMaxPool2d

    x = torch.randn(*shape)
    x.view(-1)[::37] = float("nan")
    x.view(-1)[5::41] = -float("inf")
    pool = torch.nn.MaxPool2d(k, s, p)
    assert PackedMaxPool2d.supports(pool)
    ref, out = pool(x), PackedMaxPool2d.from_pool(pool)(x)
    assert torch.equal(torch.isnan(ref), torch.isnan(out))
    assert torch.equal(ref.nan_to_num(0.0), out.nan_to_num(0.0))
    assert not PackedMaxPool2d.supports(torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True))
