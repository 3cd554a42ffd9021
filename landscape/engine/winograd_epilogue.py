"""Epilogue fusion for the float fast path's convolutions: ``relu(conv(x) [+ residual])`` in one pass.

A torch.fx rewrite of a model whose convolutions are :class:`landscape.engine.winograd.WinogradConv2d`
or plain ``nn.Conv2d`` (after BatchNorm folding, so a folded BN is an ``nn.Identity``): a conv whose only
consumer (through identities) is a ReLU, or a residual addition optionally followed by a ReLU (the ResNet
basic block, He et al. 2016, eq. 1: ``relu(F(x) + x)``), computes them in its own pass and saves one or
two passes over the activation per block: a Winograd conv inside its output transform, a plain conv as
a oneDNN post-op (:class:`OneDNNConv2d`, the same direct convolution as ``F.conv2d``; the epilogue is
applied to each output value in registers, so the result is the same up to the order of the two
additions conv + bias + residual). The engine checks the result on its probe.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .winograd import WinogradConv2d

__all__ = ["ONEDNN_FUSED", "OneDNNConv2d", "fuse_epilogues"]

#: :attr:`OneDNNConv2d.last_algorithm` when the oneDNN fused kernel ran
ONEDNN_FUSED = "onednn_fused_epilogue"


def _onednn_ok(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


class OneDNNConv2d(nn.Module):
    """``relu(conv(x) [+ residual])`` as one oneDNN convolution with post-ops (PyTorch's
    ``mkldnn::_convolution_pointwise``, the kernel its inductor uses for the same fusion).

    ``conv``'s weight and bias are read at every call (nothing is cached). Inputs other than CPU float32
    without autograd, and residuals that are not of the output's shape and dtype, run as ``conv(x)``
    followed by torch's add and ReLU; :attr:`last_algorithm` says which ran.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not _onednn_ok(conv):
            raise ValueError(f"OneDNNConv2d needs a plain float32 CPU nn.Conv2d with zero padding, got {conv}")
        self.conv = conv
        self.relu = False
        self.last_algorithm: str | None = None

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        c = self.conv
        if (
            x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu"
            and not (torch.is_grad_enabled() and (x.requires_grad or c.weight.requires_grad))
        ):
            pad, stride, dil = list(c.padding), list(c.stride), list(c.dilation)
            unary = "relu" if self.relu else None
            w, b = c.weight.detach(), None if c.bias is None else c.bias.detach()
            if residual is None:
                self.last_algorithm = ONEDNN_FUSED
                return torch.ops.mkldnn._convolution_pointwise(x, w, b, pad, stride, dil, c.groups,
                                                               unary or "none", [], "")
            ho = (x.shape[2] + 2 * pad[0] - dil[0] * (c.kernel_size[0] - 1) - 1) // stride[0] + 1
            wo = (x.shape[3] + 2 * pad[1] - dil[1] * (c.kernel_size[1] - 1) - 1) // stride[1] + 1
            if (residual.dtype == torch.float32 and residual.device.type == "cpu"
                    and tuple(residual.shape) == (x.shape[0], c.out_channels, ho, wo)):
                self.last_algorithm = ONEDNN_FUSED
                other = residual.contiguous(memory_format=_format(x))
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, other, w, b, pad, stride, dil, c.groups, "add", None, unary, [], None)
        self.last_algorithm = "torch"
        y = c(x)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if self.relu else y


def _format(x: Tensor) -> torch.memory_format:
    """The memory format oneDNN gives the output for input ``x`` (the residual must have the same)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


_ADDS = (operator.add, operator.iadd, torch.add)
_RELUS = (torch.relu, torch.relu_, F.relu)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (WinogradConv2d, OneDNNConv2d)) or super().is_leaf_module(m, qualname)


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def fuse_epilogues(model: nn.Module, example: Tensor | None = None, onednn: bool = True) -> tuple[nn.Module, int]:
    """A ``torch.fx.GraphModule`` of ``model`` with ReLU / residual-add epilogues fused into its
    :class:`WinogradConv2d` modules (which are marked ``relu=True`` as needed) and, with ``onednn``, into
    its other plain float32 ``nn.Conv2d`` (replaced by :class:`OneDNNConv2d` in the result, sharing the
    conv); ``(model, 0)`` when the model does not trace or nothing fuses. Returns ``(module, number of
    fused convs)``.

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
    # Winograd convs first (the dearer ones: where a residual add could fuse into either conv, it goes there)
    nodes = [n for n in graph.nodes if n.op == "call_module" and isinstance(modules.get(n.target), WinogradConv2d)]
    if onednn:
        nodes += [n for n in graph.nodes if n.op == "call_module" and _onednn_ok(modules.get(n.target))]
    for node in nodes:
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
        new.meta = dict(last.meta)  # the same value (its shape is read when a later add is checked)
        last.replace_all_uses_with(new)
        for dead in reversed(chain):  # each consumed only the previous one
            graph.erase_node(dead)
        if not isinstance(modules[node.target], WinogradConv2d):
            modules[node.target] = OneDNNConv2d(modules[node.target])
            gm.add_submodule(node.target, modules[node.target])
        modules[node.target].relu = relu
        fused += 1
    if not fused:
        return model, 0
    graph.lint()
    return fx.GraphModule(gm, graph), fused
