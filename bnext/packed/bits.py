"""Vectorized bit packing (numpy): signs to uint64 words and back, q values at any bit width.

Bit convention (as in Larq Compute Engine): a set bit means ``-1``, a clear bit ``+1``,
so ``sign(0) = +1`` (paper Eq. 1) packs to 0.  Channel tails of the last word are zero
in both activations and weights, so their XOR is 0 and they never reach a popcount.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def n_words(channels: int) -> int:
    """uint64 words needed for ``channels`` bits."""
    return (int(channels) + WORD_BITS - 1) // WORD_BITS


def pack_signs(negative: np.ndarray) -> np.ndarray:
    """Pack a boolean array (True = -1) along its last axis into little-endian uint64 words.

    Bit ``c % 64`` of word ``c // 64`` holds element ``c``; the tail of the last word is 0.
    """
    negative = np.asarray(negative, dtype=bool)
    c = negative.shape[-1]
    pad = n_words(c) * WORD_BITS - c
    if pad:
        negative = np.concatenate([negative, np.zeros((*negative.shape[:-1], pad), bool)], axis=-1)
    packed = np.packbits(negative, axis=-1, bitorder="little")  # (..., 8 * words) uint8
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_signs(words: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: boolean array (True = -1) with ``channels`` entries on the last axis."""
    words = np.ascontiguousarray(words, dtype="<u8")
    as_bytes = words.view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little", count=channels).astype(bool)


def pack_flat_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a flat boolean array into bytes (storage form, 1 bit per element, little bit order)."""
    return np.packbits(np.asarray(bits, dtype=bool).reshape(-1), bitorder="little")


def unpack_flat_bits(data: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_flat_bits`."""
    return np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little", count=count).astype(bool)


def pack_uint(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned integers ``< 2**bits`` into bytes at ``bits`` bits each (little bit order)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width must be in [1, 16], got {bits}")
    v = np.asarray(values).reshape(-1).astype(np.uint16)
    if v.size and int(v.max()) >= 2**bits:
        raise ValueError(f"values do not fit in {bits} bits (max {int(v.max())})")
    planes = ((v[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(bool)  # (n, bits), LSB first
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_uint(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`: ``count`` unsigned integers (uint16)."""
    flat = np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little", count=count * bits)
    planes = flat.reshape(count, bits).astype(np.uint16)
    return (planes << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint16)


def popcount_words(words: np.ndarray) -> np.ndarray:
    """Population count of uint64 words (test oracle; ``np.bitwise_count``)."""
    return np.bitwise_count(np.asarray(words, dtype=np.uint64))
