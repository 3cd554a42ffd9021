"""``pack(model) -> PackedModel``: a trained zoo model as a 1-bit inference model.

Every :class:`BinaryConv2d` becomes a :class:`PackedBinaryConv2d` (1-bit weights,
XNOR-popcount kernel); ``nn.MaxPool2d`` becomes the exact :class:`PackedMaxPool2d`; every
other module (stem, BN, PReLU, SE, ELM multiply, shortcuts,
downsample, classifier, quantized layers of :mod:`bnext.quant`) is the original torch
module, run in float exactly as in the simulated model.  For the unscaled families
(BNext, BinaryNet, Real-to-Binary) the packed logits are therefore bit-identical to the
simulated model's in eval mode; XNOR-Net and Bi-Real multiply the integer result by
``alpha`` once instead of summing ``+-alpha`` terms (differences of a few ulp).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..models.common import check_input_size
from ..nn import BinaryConv2d, binary_layers
from . import kernels
from .layers import PackedBinaryConv2d, PackedMaxPool2d, PackingError, check_packable

#: default numba threads of a packed model
DEFAULT_THREADS = 2


class PackedModel(nn.Module):
    """A model whose binary convolutions run bit-packed; call it like the model (NCHW float in, logits out).

    Attributes:
        model: the module tree (deep copy of the source, binary layers replaced).
        spec: the registry spec of the source model (``bnext.models.create`` arguments).
        quant_spec: the ``bnext.quant`` spec string, or None.
        threads: numba threads used by the binary kernels (torch's own thread setting is not touched).
    """

    def __init__(self, model: nn.Module, spec: dict[str, Any], quant_spec: str | None = None,
                 threads: int = DEFAULT_THREADS) -> None:
        super().__init__()
        self.model = model
        self.spec = copy.deepcopy(spec)
        self.quant_spec = quant_spec
        self.threads = int(threads)

    def packed_layers(self) -> Iterator[tuple[str, PackedBinaryConv2d]]:
        """``(name, PackedBinaryConv2d)`` pairs, names as in the source model."""
        for name, m in self.model.named_modules():
            if isinstance(m, PackedBinaryConv2d):
                yield name, m

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected an NCHW batch, got shape {tuple(x.shape)}")
        check_input_size(x, self.spec)
        previous = kernels.numba_get_threads()
        # never more than the calling thread's torch threads: a caller that runs batches side by side on
        # single-threaded workers (landscape.threads) gets single-threaded kernels, not nested launches
        kernels.set_threads(min(self.threads, torch.get_num_threads()))
        try:
            with torch.inference_mode():
                return self.model(x.float().cpu())
        finally:
            kernels.set_threads(previous)

    def train(self, mode: bool = True) -> PackedModel:
        """A packed model is inference-only: it always stays in eval mode."""
        return super().train(False)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the weights held for inference.

        ``binary``: the 1-bit weights at exactly 1 bit each; ``binary_held``: what the binary
        layers hold in memory (kernel form padded to 64-channel words and 16-channel tiles,
        tap sums, alpha); ``real``: every float parameter (shifts included); ``total`` =
        ``binary_held + real``.
        """
        layers = [m for _, m in self.packed_layers()]
        binary = sum(m.packed_bytes for m in layers)
        held = sum(m.weight_nbytes for m in layers)
        real = sum(p.numel() * p.element_size() for p in self.model.parameters())
        real += sum(m.shift.nbytes for m in layers if m.shift is not None)
        return {"binary": binary, "binary_held": held, "real": real, "total": held + real}


def _spec_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        raise PackingError(
            "model has no .spec: build it with bnext.models.create(name, ...) (or load it with "
            "bnext.models.load) so that the packed file can rebuild it"
        )
    return spec


def pack(model: nn.Module, *, threads: int = DEFAULT_THREADS, fuse_float: bool = False) -> PackedModel:
    """Pack a trained, fully binarized zoo model (see module docstring); the source is left untouched.

    The packed model runs on the CPU (inputs on another device are copied over); ``threads``
    is the numba thread count of its binary kernels.  ``fuse_float`` also runs the float parts of
    BNext modules as fused numba passes (:mod:`bnext.packed.fused_bnext`: within the landscape
    tolerance contract, no longer bit-identical).

    Raises:
        PackingError: no ``.spec``, no binary layer, or a binary layer not fully binarized.
    """
    model = getattr(model, "module", model)  # DDP
    spec = _spec_of(model)
    layers = list(binary_layers(model))
    if not layers:
        raise PackingError(f"model {spec['name']!r} has no BinaryConv2d layer: nothing to pack")
    for name, layer in layers:
        check_packable(name, layer)
    # deep copy without duplicating the latent binary weights (they are replaced right away)
    memo: dict[int, Any] = {id(layer): nn.Identity() for _, layer in layers}
    clone = copy.deepcopy(model, memo)
    clone.eval().cpu()  # the engine runs on the CPU
    for name, layer in layers:
        _set_submodule(clone, name, PackedBinaryConv2d.from_layer(layer, name))
    replace_real_modules(clone)
    if fuse_float:
        from .fused_bnext import fuse_bnext_modules

        fuse_bnext_modules(clone)
    clone.requires_grad_(False)
    return PackedModel(clone, spec, getattr(model, "quant_spec", None), threads)


@torch.no_grad()
def repack_(packed: PackedModel, model: nn.Module) -> PackedModel:
    """Refresh ``packed`` in place from ``model`` (same architecture): repack binary weights, copy the rest.

    Cheaper than :func:`pack` when many weight sets of one architecture are evaluated
    (e.g. a loss-landscape grid).
    """
    model = getattr(model, "module", model)
    src_layers = dict(binary_layers(model))
    dst_layers = dict(packed.packed_layers())
    if set(src_layers) != set(dst_layers):
        raise PackingError(f"model and packed model differ in binary layers: "
                           f"{sorted(set(src_layers) ^ set(dst_layers))[:5]}")
    for name, layer in src_layers.items():
        dst_layers[name].load_from(layer, name)
    src = model.state_dict()
    for key, value in packed.model.state_dict().items():
        if key not in src:
            raise PackingError(f"model has no tensor {key!r} that the packed model needs")
        value.copy_(src[key])
    from .fused_bnext import refresh_fused_modules
    from .fusion import refresh_blocks

    refresh_blocks(packed.model)
    refresh_fused_modules(packed.model)
    return packed


def replace_real_modules(model: nn.Module) -> nn.Module:
    """Exact engine-side rewrites of a packed module tree, in place: ``nn.MaxPool2d`` -> :class:`PackedMaxPool2d`,
    and blocks whose binary conv can write packed bits for the next one (:mod:`bnext.packed.fusion`)."""
    from .fusion import fuse_blocks

    for name, m in list(model.named_modules()):
        if type(m) is nn.MaxPool2d and PackedMaxPool2d.supports(m):
            _set_submodule(model, name, PackedMaxPool2d.from_pool(m))
    fuse_blocks(model)
    return model


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)


def is_binary_model(model: nn.Module) -> bool:
    """True if the model has at least one :class:`BinaryConv2d`."""
    return any(isinstance(m, BinaryConv2d) for m in model.modules())
