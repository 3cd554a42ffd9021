"""The packed engine as a *forward factory* for model-agnostic evaluators.

``landscape`` (and any other evaluator that perturbs weights and re-evaluates) takes a
``forward_factory(model) -> callable``, called after each change of the weights.  For binary
models :class:`PackedForward` packs once and then refreshes the packed weights in place
(:func:`repack_`) per call, so every evaluation runs through the XNOR-popcount kernels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .model import pack, repack_


class PackedForward:
    """Forward factory over :func:`pack`: packs once, then ``repack_`` per call."""

    def __init__(self) -> None:
        self._packed: Any = None

    def __call__(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        if self._packed is None:
            self._packed = pack(model)
        else:
            repack_(self._packed, model)
        return self._packed


def packed_forward_factory(model: nn.Module, probe: Tensor, *, required: bool) -> PackedForward | None:
    """A :class:`PackedForward` if packing ``model`` reproduces it on ``probe`` (within 1e-4 relative).

    With ``required=False`` a failure warns and returns ``None`` (use the torch forward);
    with ``required=True`` it raises ``RuntimeError`` naming the reason.
    """
    factory = PackedForward()
    try:
        with torch.inference_mode():
            ref = model.eval()(probe)
            got = factory(model)(probe)
        err = float((ref - got).abs().max())
    except Exception as exc:  # noqa: BLE001  (any packing failure means: fall back to torch)
        if required:
            raise RuntimeError(f"packing failed ({exc})") from exc
        warnings.warn(f"packed forward unavailable ({exc}); using the torch forward", stacklevel=2)
        return None
    if err > 1e-4 * max(1.0, float(ref.abs().max())):
        msg = f"packed forward differs from the model by {err:.3g}"
        if required:
            raise RuntimeError(msg)
        warnings.warn(f"{msg}; using the torch forward", stacklevel=2)
        return None
    return factory
