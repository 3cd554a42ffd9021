"""Edge cases of the packed kernels' blocking: output pixels in blocks of PB over the flattened plane (the last
block shifted back, planes smaller than a block), receptive fields read in place (k rows per pixel), channel
counts off the 64-bit word and the OT-channel tile, both thread paths, the bit-output conv and the max-pool."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnext.nn import BinaryConv2d, sign
from bnext.packed import PackedBinaryConv2d, kernels
from bnext.packed.layers import PackedMaxPool2d

SHAPES = [
    # cin, cout, k, stride, h, w, batch: output planes of 1, 2, 6, 49 (not a multiple of PB), 3 images
    (5, 3, 3, 1, 1, 1, 2),
    (70, 17, 3, 1, 2, 1, 1),
    (64, 16, 3, 2, 4, 6, 3),
    (129, 40, 3, 1, 7, 7, 2),
    (65, 33, 1, 1, 3, 5, 2),
    (200, 72, 1, 2, 9, 5, 1),
]


def _layer(cin, cout, k, stride, seed=0):
    torch.manual_seed(seed)
    layer = BinaryConv2d(cin, cout, k, stride).eval()
    with torch.no_grad():
        layer.weight.normal_()
    return layer


def _reference(layer, x):
    return F.conv2d(sign(x), sign(layer.weight), None, layer.stride, layer.padding)


@pytest.mark.parametrize("cin,cout,k,stride,h,w,batch", SHAPES)
def test_blocks_over_the_flattened_plane_are_exact_on_both_thread_paths(cin, cout, k, stride, h, w, batch):
    layer = _layer(cin, cout, k, stride)
    packed = PackedBinaryConv2d.from_layer(layer)
    x = torch.randn(batch, cin, h, w)
    ref = _reference(layer, x)
    xp = packed.pack_input(x.numpy())
    corr = kernels.border_correction(packed.tapsum, k, stride, k // 2, h, w, ref.shape[2], ref.shape[3])
    for threads in (1, 2):
        out = np.full(ref.shape, np.nan, np.float32)
        kernels.binary_conv(xp, packed.wt, k, stride, k // 2, k * k * cin, packed.alpha_pad, corr, out, threads)
        np.testing.assert_array_equal(out, ref.numpy(), err_msg=f"threads={threads}")


@pytest.mark.parametrize("cin,cout,k,stride,h,w,batch", SHAPES)
def test_bit_output_conv_matches_thresholded_float_conv(cin, cout, k, stride, h, w, batch):
    layer = _layer(cin, cout, k, stride, seed=1)
    packed = PackedBinaryConv2d.from_layer(layer)
    x = torch.randn(batch, cin, h, w)
    ref = _reference(layer, x).numpy()  # integers
    o_pad = packed.tapsum.shape[1]
    rng = np.random.default_rng(0)
    lo = np.full(o_pad, np.inf, np.float32)
    hi = np.full(o_pad, -np.inf, np.float32)
    lo[:cout] = rng.integers(-k * k * cin, 1, cout)
    hi[:cout] = lo[:cout] + rng.integers(0, k * k * cin, cout)
    expected = (ref >= lo[None, :cout, None, None]) & (ref <= hi[None, :cout, None, None])
    h_out, w_out = ref.shape[2], ref.shape[3]
    words = -(-cout // 64)
    for threads in (1, 2):
        yp = np.zeros((batch, h_out + 2, w_out + 2, words), np.uint64)
        kernels.binary_conv_bits(packed.pack_input(x.numpy()), packed.wt, k, stride, k // 2, k * k * cin,
                                 packed._correction(h, w), lo, hi, h_out, w_out, yp, 1, threads)
        bits = (yp[:, 1:-1, 1:-1, :, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        got = bits.reshape(batch, h_out, w_out, words * 64)[..., :cout].transpose(0, 3, 1, 2).astype(bool)
        np.testing.assert_array_equal(got, expected, err_msg=f"threads={threads}")
        assert not yp[:, 0].any() and not yp[:, -1].any() and not yp[:, :, 0].any() and not yp[:, :, -1].any()


def test_conv_packed_plans_per_shape_and_still_validates():
    layer = _layer(70, 20, 3, 1)
    packed = PackedBinaryConv2d.from_layer(layer)
    for h, w, n in [(6, 6, 1), (9, 4, 2), (6, 6, 1), (1, 3, 1)]:
        x = torch.randn(n, 70, h, w)
        assert torch.equal(torch.from_numpy(packed.conv_packed(packed.pack_input(x.numpy()), h, w)),
                           _reference(layer, x))
    xp = packed.pack_input(torch.randn(1, 70, 6, 6).numpy())
    with pytest.raises(ValueError, match="uint64"):
        packed.conv_packed(xp.astype(np.int64), 6, 6)  # same shape as a cached plan, wrong dtype
    with pytest.raises(ValueError, match="C-contiguous"):
        packed.conv_packed(np.asfortranarray(xp), 6, 6)
    with pytest.raises(ValueError, match="packed input"):
        packed.conv_packed(xp, 5, 6)


def _maxpool_reference(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """torch's CPU rule written out: taps in row-major order, ``v > m or isnan(v)`` replaces ``m``."""
    n, h, w = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.empty((n, ho, wo), np.float32)
    for c in range(n):
        for i in range(ho):
            for j in range(wo):
                m = np.float32(-np.inf)
                for a in range(max(i * s - p, 0), min(i * s - p + k, h)):
                    for b in range(max(j * s - p, 0), min(j * s - p + k, w)):
                        v = x[c, a, b]
                        if v > m or v != v:
                            m = v
                out[c, i, j] = m
    return out


@pytest.mark.parametrize("shape,k,s,p", [((2, 3, 9, 11), 3, 2, 1), ((1, 4, 8, 7), 3, 1, 1), ((1, 2, 10, 13), 3, 3, 1),
                                         ((1, 2, 7, 7), 2, 2, 0), ((1, 3, 6, 5), 5, 2, 2)])
def test_maxpool_is_bit_identical_including_signed_zeros_and_nan_payloads(shape, k, s, p):
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, shape).astype(np.float32)  # many ties, so the tap order decides
    x[x == 0] = rng.choice(np.array([0.0, -0.0], np.float32), int((x == 0).sum()))
    flat = x.reshape(-1).view(np.uint32)
    flat[::17] = 0x7FC00000 + np.arange(flat[::17].size, dtype=np.uint32)  # NaNs with distinct payloads
    expected = _maxpool_reference(x.reshape(-1, shape[2], shape[3]), k, s, p)
    for threads in (1, 2):
        out = PackedMaxPool2d(k, s, p)
        kernels_out = np.empty((shape[0], shape[1]) + expected.shape[1:], np.float32)
        kernels.maxpool2d(x, kernels_out, k, s, p, threads)
        np.testing.assert_array_equal(kernels_out.reshape(expected.shape).view(np.uint32), expected.view(np.uint32))
        ref = F.max_pool2d(torch.from_numpy(x), k, s, p)
        assert torch.equal(out(torch.from_numpy(x)).isnan(), ref.isnan())


def test_thread_count_read_matches_numba_per_thread():
    import threading

    import numba

    from bnext.packed.threads import numba_get_threads, set_threads

    seen = {}

    def worker():
        set_threads(1)
        seen["worker"] = (numba_get_threads(), numba.get_num_threads())

    try:
        set_threads(2)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen["worker"] == (1, 1)
        assert numba_get_threads() == numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        set_threads(2)
