"""BatchNorm folding: merge each eval-mode ``BatchNorm2d`` into the plain ``nn.Conv2d`` that feeds it.

Exact in real arithmetic, but float rounding changes (~1e-7 relative for real-valued networks); the
engine checks the folded copy against the model once (see :mod:`landscape.engine`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.track_running_stats
        and bn.running_mean is not None
        and conv.out_channels == bn.num_features
    )


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names of ``(Conv2d, BatchNorm2d)`` pairs where the BN directly and only consumes the conv.

    Uses a ``torch.fx`` trace when the model traces (checks that each module is called once and
    that the conv output has no other user); otherwise adjacent children of plain ``nn.Sequential``
    containers. Subclasses (e.g. binary convolutions) are never folded.
    """
    modules = dict(model.named_modules())
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models fall back to Sequential chains
        graph = None
    pairs: list[tuple[str, str]] = []
    if graph is not None:
        calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        for node in graph.nodes:
            if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
                continue
            src = node.args[0]
            if not isinstance(src, torch.fx.Node) or src.op != "call_module":
                continue
            conv, bn = modules.get(src.target), modules.get(node.target)
            if conv is None or bn is None or not _foldable(conv, bn):
                continue
            if len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1:
                pairs.append((src.target, node.target))
        return pairs
    for name, mod in modules.items():
        if type(mod).forward is not nn.Sequential.forward or not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
            if _foldable(m1, m2):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + n1, prefix + n2))
    return pairs


@dataclass
class _FoldedPair:
    conv: nn.Conv2d  # the original conv (weights move with the grid point)
    bn: nn.BatchNorm2d  # the original BN
    weight: Tensor  # folded conv weight in the copy
    bias: Tensor  # folded conv bias in the copy

    def refresh(self) -> None:
        bn = self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        torch.mul(self.conv.weight, scale.reshape(-1, 1, 1, 1), out=self.weight)
        shift = -bn.running_mean * scale
        if self.conv.bias is not None:
            shift = shift + self.conv.bias * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        self.bias.copy_(shift)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, list[_FoldedPair]]:
    """A copy of ``model`` with each foldable BN merged into its conv (eval-mode arithmetic).

    The copy shares every other parameter and buffer with ``model`` (same tensor objects), so
    in-place changes to ``model`` show through; call ``pair.refresh()`` after changing the conv or
    BN tensors. Returns ``(copy, pairs)``; with no foldable pair the copy is ``model`` itself.
    """
    names = find_conv_bn_pairs(model)
    if not names:
        return model, []
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    fused = copy.deepcopy(model, memo)
    pairs = []
    for conv_name, bn_name in names:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fconv = fused.get_submodule(conv_name)
        w = nn.Parameter(torch.empty_like(conv.weight), requires_grad=False)
        b = nn.Parameter(
            torch.empty(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device),
            requires_grad=False,
        )
        fconv.weight, fconv.bias = w, b
        parent_name, _, child = bn_name.rpartition(".")
        setattr(fused.get_submodule(parent_name) if parent_name else fused, child, nn.Identity())
        pairs.append(_FoldedPair(conv, bn, w, b))
    with torch.no_grad():
        for p in pairs:
            p.refresh()
    return fused, pairs
