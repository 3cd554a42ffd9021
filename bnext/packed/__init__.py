"""Packed 1-bit inference: bit-packed weights, an XNOR-popcount engine (numba) and a model file.

- :func:`pack` turns a trained, fully binarized zoo model into a :class:`PackedModel`
  (callable like the model); :func:`repack_` refreshes one in place.
- :func:`save` / :func:`load` write and read the ``.bnx`` file (format spec in the README, "Packed 1-bit inference").
- CLI: ``python -m bnext.packed pack|info|bench|sizes``.
"""

from .._lazy import lazy_exports

# imported on first use (``python -m bnext.packed --help`` stays free of torch)
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".fileformat": ["PackedFormatError", "info", "load", "save"],
    ".forward": ["PackedForward", "packed_forward_factory", "register_landscape_provider"],
    ".fusion": ["FusedBinaryBlock"],
    ".layers": ["PackedBinaryConv2d", "PackedMaxPool2d", "PackingError"],
    ".model": ["DEFAULT_THREADS", "PackedModel", "pack", "repack_"],
})
