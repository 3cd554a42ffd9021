"""Packed 1-bit inference: bit-packed weights, an XNOR-popcount engine (numba) and a model file.

- :func:`pack` turns a trained, fully binarized zoo model into a :class:`PackedModel`
  (callable like the model); :func:`repack_` refreshes one in place.
- :func:`save` / :func:`load` write and read the ``.bnx`` file (format spec in the README, "Packed 1-bit inference").
- CLI: ``python -m bnext.packed pack|info|bench|sizes``.
"""

from .fileformat import PackedFormatError, info, load, save
from .forward import PackedForward, packed_forward_factory
from .fusion import FusedBinaryBlock
from .layers import PackedBinaryConv2d, PackedMaxPool2d, PackingError
from .model import DEFAULT_THREADS, PackedModel, pack, repack_

__all__ = [
    "PackedForward",
    "packed_forward_factory",
    "DEFAULT_THREADS",
    "FusedBinaryBlock",
    "PackedBinaryConv2d",
    "PackedMaxPool2d",
    "PackedModel",
    "PackedFormatError",
    "PackingError",
    "info",
    "load",
    "pack",
    "repack_",
    "save",
]
