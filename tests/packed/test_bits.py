import numpy as np
import pytest
from numba import njit

from bnext.packed import bits
from bnext.packed.kernels import popcount64


@pytest.mark.parametrize("channels", [1, 13, 63, 64, 65, 130, 256])
def test_pack_signs_roundtrip_and_zero_tail(channels):
    rng = np.random.default_rng(channels)
    neg = rng.random((3, 5, channels)) < 0.5
    words = bits.pack_signs(neg)
    assert words.dtype == np.uint64 and words.shape == (3, 5, bits.n_words(channels))
    np.testing.assert_array_equal(bits.unpack_signs(words, channels), neg)
    # bit c of word c // 64 is element c; the tail of the last word is zero
    c = channels - 1
    assert ((words[..., c // 64] >> np.uint64(c % 64)) & np.uint64(1)).astype(bool).tolist() == neg[..., c].tolist()
    tail = bits.n_words(channels) * 64 - channels
    if tail:
        assert not np.any(words[..., -1] >> np.uint64(64 - tail))
    np.testing.assert_array_equal(bits.popcount_words(words).sum(-1), neg.sum(-1))


def test_flat_bits_roundtrip():
    rng = np.random.default_rng(0)
    b = rng.random(1001) < 0.3
    packed = bits.pack_flat_bits(b)
    assert packed.nbytes == 126
    np.testing.assert_array_equal(bits.unpack_flat_bits(packed, 1001), b)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 8])
def test_pack_uint_roundtrip(width):
    rng = np.random.default_rng(width)
    q = rng.integers(0, 2**width, size=(7, 5, 3)).astype(np.uint8)
    data = bits.pack_uint(q, width)
    assert data.nbytes == (q.size * width + 7) // 8
    np.testing.assert_array_equal(bits.unpack_uint(data, width, q.size).reshape(q.shape), q)
    with pytest.raises(ValueError, match="do not fit"):
        bits.pack_uint(np.array([2**width]), width)


@njit(cache=True)
def _popcounts(words):
    out = np.empty(words.size, np.uint64)
    for i in range(words.size):
        out[i] = popcount64(words[i])
    return out


def test_popcount_intrinsic_matches_numpy():
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**63, size=1000, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    words[:3] = [0, np.uint64(2**64 - 1), np.uint64(2**63)]
    np.testing.assert_array_equal(_popcounts(words), np.bitwise_count(words))


def test_popcount_compiles_to_popcnt_instructions():
    """The scalar intrinsic becomes POPCNT; the micro-kernel a vector popcount (or POPCNT)."""
    from bnext.packed import kernels

    @njit(cache=False)
    def scalar(w):
        return popcount64(w)

    @njit(cache=False)
    def tile(a, aoffs, b, out, alpha, corr, offs):
        kernels._tiles_nchw(a, aoffs, 1, 9, 0, b, 0, 1, 576, out, 0, 0, 64, alpha, 0, corr, offs)

    scalar(np.uint64(5))
    asm = "\n".join(scalar.inspect_asm().values()).lower()
    assert "popcnt" in asm
    args = (np.zeros(64, np.uint64), np.arange(kernels.PB, dtype=np.int64) * 9, np.zeros(9 * kernels.OT, np.uint64),
            np.zeros(64 * 16, np.float32),
            np.ones(kernels.OT, np.float32), np.zeros(2 * kernels.OT, np.float32), np.zeros(kernels.PB, np.int64))
    tile(*args)
    asm = "\n".join(tile.inspect_asm().values()).lower()
    assert any(op in asm for op in ("vpopcntq", "vpshufb", "popcnt"))
