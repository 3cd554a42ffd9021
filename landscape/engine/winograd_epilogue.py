"""Epilogue fusion for the Winograd convolutions: ``relu(conv(x) [+ residual])`` in one output transform.

A torch.fx rewrite of a model whose convolutions are :class:`landscape.engine.winograd.WinogradConv2d`
(after BatchNorm folding, so a folded BN is an ``nn.Identity``): a wrapped conv whose only consumer
(through identities) is a ReLU, or a residual addition optionally followed by a ReLU (the ResNet basic
block, He et al. 2016, eq. 1: ``relu(F(x) + x)``), computes them inside its output transform and
saves one or two passes over the activation per block. The engine checks the result on its probe.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .winograd import WinogradConv2d

__all__ = ["fuse_epilogues"]

_ADDS = (operator.add, operator.iadd, torch.add)
_RELUS = (torch.relu, torch.relu_, F.relu)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, WinogradConv2d) or super().is_leaf_module(m, qualname)


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def fuse_epilogues(model: nn.Module, example: Tensor | None = None) -> tuple[nn.Module, int]:
    """A ``torch.fx.GraphModule`` of ``model`` with ReLU / residual-add epilogues fused into its
    :class:`WinogradConv2d` modules (which are marked ``relu=True`` as needed); ``(model, 0)`` when the
    model does not trace or nothing fuses. Returns ``(module, number of fused convs)``.

    An add is fused only when its other operand has the conv output's shape and dtype: with ``example``
    (an input batch) the shapes are propagated and checked here; in any case :class:`WinogradConv2d`
    checks them at every call and lets torch do an add that would broadcast (``relu(conv(x) + b)`` with
    ``b`` of shape (1, C, 1, 1) is not a residual).

    The wrapped modules are shared with ``model`` and changed in place: use the result, not ``model``.
    """
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
        if example is not None:
            with torch.inference_mode():
                ShapeProp(gm).propagate(example)
    except Exception:  # noqa: BLE001 - untraceable models keep separate epilogues
        return model, 0
    graph = gm.graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def module(node: fx.Node | None, kind: type) -> bool:
        return (
            node is not None and node.op == "call_module" and type(modules.get(node.target)) is kind
            and calls[node.target] == 1
        )

    def is_relu(node: fx.Node | None) -> bool:
        if node is None:
            return False
        if module(node, nn.ReLU):
            return True
        if node.op == "call_function" and node.target in _RELUS:
            return len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
        return node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1

    def is_add(node: fx.Node | None, value: fx.Node) -> bool:
        if node is None or node.kwargs or len(node.args) != 2 or node.args[0] is node.args[1]:
            return False
        if not all(isinstance(a, fx.Node) for a in node.args) or value not in node.args:
            return False
        return (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target in ("add", "add_") and node.args[0] is value
        )

    def same_shape(a: fx.Node, b: fx.Node) -> bool:
        ta, tb = a.meta.get("tensor_meta"), b.meta.get("tensor_meta")
        if example is None:
            return True  # unknown here: checked at every call by WinogradConv2d
        return (isinstance(ta, TensorMetadata) and isinstance(tb, TensorMetadata) and ta.shape == tb.shape
                and ta.dtype == tb.dtype)

    fused = 0
    for node in list(graph.nodes):
        if not (node.op == "call_module" and isinstance(modules.get(node.target), WinogradConv2d)):
            continue
        if calls[node.target] != 1 or len(node.args) != 1 or node.kwargs:
            continue
        chain = [node]
        value, user = node, _single_user(node)
        while module(user, nn.Identity):
            chain.append(user)
            value, user = user, _single_user(user)
        residual, relu = None, False
        if is_add(user, value) and same_shape(user.args[1] if user.args[0] is value else user.args[0], node):
            residual = user.args[1] if user.args[0] is value else user.args[0]
            chain.append(user)
            if is_relu(_single_user(user)):
                relu = True
                chain.append(_single_user(user))
        elif is_relu(user):
            relu = True
            chain.append(user)
        if len(chain) == 1 or not (relu or residual is not None):
            continue
        last = chain[-1]
        with graph.inserting_before(last):
            args = (node.args[0], residual) if residual is not None else (node.args[0],)
            new = graph.call_module(node.target, args)
        last.replace_all_uses_with(new)
        for dead in reversed(chain):  # each consumed only the previous one
            graph.erase_node(dead)
        modules[node.target].relu = relu
        fused += 1
    if not fused:
        return model, 0
    graph.lint()
    return fx.GraphModule(model, graph), fused
