"""Keep activations packed between binary convs where the architecture allows it.

A binary conv's output ``y`` is an integer in ``[-K, K]``.  When the next binary conv
sees it only through per-channel elementwise modules (BN -> hardtanh in BinaryNet-18's
basic block), the bit it needs, ``sign(act(bn(y))) = -1``, is a function of ``y`` alone
per channel.  :func:`sign_interval` evaluates the block's *own* torch modules on every
integer ``y`` in ``[-K, K]`` at pack time, so the result is exact by construction (the
same float ops on the same values), and checks that the ``-1`` set of every channel is an
interval ``[lo, hi]`` (BN is monotone per channel, hardtanh too).  The first conv then
writes packed bits straight into the second conv's input buffer: no float output, no
BN/hardtanh pass, no re-packing.

In the zoo this pattern exists only in ``binarynet18``; BNext, Bi-Real and Real-to-Binary
add a real-valued shortcut before the next sign, and XNOR-Net's conv is preceded by its
own BN inside a ``Sequential``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..models.resnet import BasicBlock
from .bits import n_words
from .layers import PackedBinaryConv2d

#: elementwise activations allowed between the BN and the next sign
MONOTONE_ACTS = (nn.Hardtanh, nn.ReLU, nn.Identity)


@torch.no_grad()
def sign_interval(chain: Callable[[Tensor], Tensor], channels: int, k_total: int
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per channel, the integers ``y`` in ``[-K, K]`` with ``chain(y) < 0`` (or NaN) as ``[lo, hi]``.

    Returns float32 ``(lo, hi)`` (an empty set is ``lo = +inf, hi = -inf``), or None if some
    channel's set is not an interval.
    """
    y = torch.arange(-k_total, k_total + 1, dtype=torch.float32)
    probe = y.view(1, 1, 1, -1).expand(1, channels, 1, y.numel()).contiguous()
    with torch.inference_mode():
        negative = ~(chain(probe) >= 0)  # sign(...) = -1, exactly as the binarizer decides
    neg = negative.reshape(channels, -1).numpy()
    count = neg.sum(axis=1)
    first = neg.argmax(axis=1)
    last = neg.shape[1] - 1 - neg[:, ::-1].argmax(axis=1)
    if np.any((count > 0) & (count != last - first + 1)):
        return None
    lo = np.where(count > 0, first - k_total, np.inf).astype(np.float32)
    hi = np.where(count > 0, last - k_total, -np.inf).astype(np.float32)
    return lo, hi


def _padded(values: np.ndarray, size: int, fill: float) -> np.ndarray:
    out = np.full(size, fill, np.float32)
    out[: values.size] = values
    return out


class FusedBinaryBlock(BasicBlock):
    """A :class:`BasicBlock` whose ``conv1`` writes packed bits for ``conv2`` (same children, same state dict).

    ``forward`` equals ``BasicBlock.forward`` bit for bit: ``bn1`` and ``act1`` are folded into
    the per-channel intervals of :func:`sign_interval` (recomputed by :meth:`refresh` after the
    weights change, e.g. in :func:`bnext.packed.repack_`).
    """

    conv1: PackedBinaryConv2d
    conv2: PackedBinaryConv2d

    def refresh(self) -> bool:
        """Recompute the intervals from ``bn1``/``act1``; False (and unfused forward) if they are not intervals."""
        c1 = self.conv1
        k_total = c1.kernel_size * c1.kernel_size * c1.in_channels
        interval = sign_interval(lambda t: self.act1(self.bn1(t)), c1.out_channels, k_total)
        if interval is not None:  # kernel form: padded to whole tiles, padded channels never set
            size = c1.alpha_pad.shape[0]
            interval = (_padded(interval[0], size, np.inf), _padded(interval[1], size, -np.inf))
        self._interval = interval
        return interval is not None

    def forward(self, x: Tensor) -> Tensor:
        if getattr(self, "_interval", None) is None:
            return super().forward(x)
        c1, c2 = self.conv1, self.conv2
        xn = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        n, _, h, w = xn.shape
        _, _, h1, w1 = c1.output_shape(n, h, w)
        p2 = c2.padding
        yp = np.zeros((n, h1 + 2 * p2, w1 + 2 * p2, n_words(c1.out_channels)), np.uint64)
        c1.conv_bits(c1.pack_input(xn), h, w, *self._interval, yp, p2)
        out = self.bn2(torch.from_numpy(c2.conv_packed(yp, h1, w1)))
        return self.act2(out + self.downsample(x))


def fusable(block: nn.Module) -> bool:
    """True for a basic block ``conv1 (binary) -> BN -> monotone act -> conv2 (binary, no shift, unscaled)``."""
    return (
        type(block) is BasicBlock
        and isinstance(block.conv1, PackedBinaryConv2d)
        and isinstance(block.conv2, PackedBinaryConv2d)
        and block.conv1.scale == "none"
        and block.conv2.shift is None
        and type(block.bn1) is nn.BatchNorm2d
        and type(block.act1) in MONOTONE_ACTS
    )


def retype_modules(model: nn.Module, predicate: Callable[[nn.Module], bool], cls: type[nn.Module],
                   accept: Callable[[nn.Module], bool] | None = None) -> int:
    """Swap every submodule matching ``predicate`` for a ``cls`` sharing its children, parameters and buffers.

    ``cls`` is a fused subclass with the same attributes (its ``__dict__`` is copied, nothing is
    recomputed); ``accept`` may still refuse the swapped module. Returns the number swapped.
    """
    count = 0
    for name, module in list(model.named_modules()):
        if not predicate(module):
            continue
        swapped = cls.__new__(cls)
        swapped.__dict__ = module.__dict__.copy()
        if accept is not None and not accept(swapped):
            continue
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, leaf, swapped)
        count += 1
    return count


def fuse_blocks(model: nn.Module) -> int:
    """Replace every :func:`fusable` block of ``model`` by a :class:`FusedBinaryBlock` in place; returns the count."""
    return retype_modules(model, fusable, FusedBinaryBlock, accept=lambda fused: fused.refresh())


def refresh_blocks(model: nn.Module) -> None:
    """Recompute the intervals of every :class:`FusedBinaryBlock` (after the weights changed)."""
    for m in model.modules():
        if isinstance(m, FusedBinaryBlock):
            m.refresh()
