"""Fused float parts of a packed BNext module: one numba call per module instead of ~15 torch passes.

In a packed :class:`~bnext.models.bnext.InfoRCPModule` only the binary conv is bit-packed; the
float work around it (paper Fig. 3c and Fig. 4: BN -> PReLU -> recoupling ``s*v + (1-s)*x`` ->
SE pooling -> SE MLP -> ``x * gate`` -> ELM ``x * r`` -> BN -> ``+ r``) streams the whole activation
tensor through memory once per torch op.  :class:`FusedInfoRCPModule` runs it as one call of
:func:`bnext.packed.fused_passes.module_float`, image by image (see there): pass A, the SE MLP, pass B,
and the next module's input bits.  The shortcut is computed on the fly when it is elementwise
(identity, ELM PReLU, the BN of a projection); a strided shortcut's ``avg_pool2x2(PReLU(u))`` is one
numba pass, a projection's real 1x1 conv stays in torch.

Chaining: :func:`fuse_bnext_modules` links each fused module to the next one in execution order.  The
first packs its output for the second's binary conv (same shift, same padding: the bits
``pack_input`` would compute, bit for bit) and hands the words over with the output tensor; the
second uses them only if its input *is* that tensor (otherwise it packs its input itself, and the
link is dropped: e.g. BNext-T's concatenated pointwise outputs).

Per-point constants (BN affines, slopes, mix weights, SE weights) are derived once by :meth:`refresh`
(at fusion and by :func:`bnext.packed.repack_` after the weights change), not per batch.

The float operations are the module's own, in the same order, except the per-plane SE sums (float64,
any order) and the BN affine form: results agree with the unfused module to a few ulp, which may flip
the sign of a next pre-activation within rounding distance of 0 — the tolerance contract of
``landscape.engine.TOLERANCE`` (README "Speed"), not bit-identity.  :func:`bnext.packed.pack` swaps
these in only with ``fuse_float=True`` (the landscape forward when not ``exact``); same children and
state dict, so ``repack_`` works unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..models.bnext import InfoRCPModule
from ..nn import SqueezeExpand
from . import kernels
from .bits import n_words
from .fused_passes import R_AFFINE, R_PRELU, R_SRC, BufferPool, module_float, pool_shape, prelu_avgpool2x2
from .fusion import retype_modules
from .layers import PackedBinaryConv2d
from .threads import thread_slot, tid


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().reshape(-1).numpy(), np.float32)


def bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as ``x * a + b`` per channel (``a = weight / sqrt(var + eps)``, ``b = bias - mean * a``)."""
    invstd = 1.0 / torch.sqrt(bn.running_var.float() + bn.eps)
    a = invstd * bn.weight.float() if bn.weight is not None else invstd
    b = -bn.running_mean.float() * a
    if bn.bias is not None:
        b = bn.bias.float() + b
    return _np(a), _np(b)


def _plain_bn(m: nn.Module) -> bool:
    return (type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_mean is not None
            and m.running_var is not None)


def _prelu_or_identity(m: nn.Module, channels: int) -> bool:
    return type(m) is nn.Identity or (type(m) is nn.PReLU and m.weight.numel() in (1, channels))


def _pool2x2(m: nn.Module) -> bool:
    """The zoo's ``avg_pool2x2`` (what :func:`prelu_avgpool2x2` computes)."""
    def one(v: Any) -> Any:
        return v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else None)

    return (type(m) is nn.AvgPool2d and one(m.kernel_size) == 2 and one(m.stride) == 2 and one(m.padding) == 0
            and m.ceil_mode and not m.count_include_pad and m.divisor_override is None)


def _standard_se(se: nn.Module) -> bool:
    """A :class:`SqueezeExpand` of plain modules (its MLP then runs inside the numba call)."""
    return (type(se.squeeze) is nn.Conv2d and type(se.expand) is nn.Conv2d and se.squeeze.bias is not None
            and se.expand.bias is not None and type(se.act) is nn.ReLU and type(se.gate) is nn.Sigmoid
            and type(se.pool) is nn.AdaptiveAvgPool2d and se.pool.output_size in (1, (1, 1)))


def _shortcut_kind(m: InfoRCPModule) -> str | None:
    """``identity`` (``r = act(u)``), ``pool`` (``avg_pool2x2(act(u))``), ``project`` (``[pool] conv BN``), or None."""
    c_in, c = m.conv.in_channels, m.conv.out_channels
    if not _prelu_or_identity(m.shortcut_act, c_in):
        return None
    sc = m.shortcut
    if type(sc) is nn.Identity:
        return "identity" if m.conv.stride == 1 and c_in == c else None
    if _pool2x2(sc):
        return "pool" if c_in == c else None
    if type(sc).__name__ == "PooledProjection":
        parts = list(sc)
        if len(parts) == 3 and _pool2x2(parts[0]) and isinstance(parts[1], nn.Conv2d) and _plain_bn(parts[2]):
            return "project"
        if len(parts) == 2 and isinstance(parts[0], nn.Conv2d) and _plain_bn(parts[1]):
            return "project"
    return None


def fusable_module(m: nn.Module) -> bool:
    """True for an :class:`InfoRCPModule` whose conv is packed and whose float parts are the standard modules."""
    if type(m) is not InfoRCPModule or not isinstance(m.conv, PackedBinaryConv2d):
        return False
    c = m.conv.out_channels
    if not _plain_bn(m.bn) or type(m.act) is not nn.PReLU or m.act.weight.numel() not in (1, c):
        return False
    if _shortcut_kind(m) is None:
        return False
    if m.info_rcp:
        if type(m.se) is not SqueezeExpand or not hasattr(m, "mix_weight"):
            return False
        if not m.mix_with_shortcut and not (m.conv.in_channels == c and (
                (type(m.pool_input) is nn.Identity and m.conv.stride == 1)
                or (_pool2x2(m.pool_input) and m.conv.stride == 2))):
            return False
    return _plain_bn(m.bn_out) or type(m.bn_out) is nn.Identity


class FusedInfoRCPModule(InfoRCPModule):
    """An :class:`InfoRCPModule` (packed conv) whose float parts run as one numba call (module docstring)."""

    conv: PackedBinaryConv2d

    def refresh(self) -> bool:
        """Derive the per-point constants from the module's parameters and buffers (after they change)."""
        c, c_in = self.conv.out_channels, self.conv.in_channels
        ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
        structure = self.__dict__.get("_structure")
        if structure is None:  # what the float parts are does not change with the weights
            structure = self._structure = (_shortcut_kind(self), bool(self.info_rcp) and _standard_se(self.se))
        p: dict[str, Any] = {"kind": structure[0], "se_numba": structure[1]}
        p["a"], p["b"] = bn_affine(self.bn)
        p["pw"] = np.ascontiguousarray(np.broadcast_to(_np(self.act.weight), (c,)))
        act = self.shortcut_act
        p["sw"] = ones if type(act) is nn.Identity else np.ascontiguousarray(np.broadcast_to(_np(act.weight), (c_in,)))
        if self.info_rcp:
            s = self.mix_weight.detach().float()
            s = s.clamp(0.0, 1.0) if self.clamp_mix else s
            p["s"], p["s1"] = _np(s), _np(1.0 - s)
            se = self.se
            if p["se_numba"]:
                w1, w2 = (np.ascontiguousarray(t.detach().float().reshape(t.shape[0], -1).numpy().T)
                          for t in (se.squeeze.weight, se.expand.weight))  # transposed: (C, hidden), (hidden, C)
                p["se"] = (w1, _np(se.squeeze.bias), w2, _np(se.expand.bias))
        else:
            p["s"] = p["s1"] = ones
        if "se" not in p:
            p["se"] = (np.zeros((c, 1), np.float32), zeros[:1], np.zeros((1, c), np.float32), zeros)
        if type(self.bn_out) is nn.BatchNorm2d:
            p["a2"], p["b2"] = bn_affine(self.bn_out)
        else:
            p["a2"], p["b2"] = ones, zeros
        p["ra"], p["rb"] = bn_affine(list(self.shortcut)[-1]) if p["kind"] == "project" else (ones, zeros)
        # r from its source array: the projection's conv output through its BN; the identity shortcut of an
        # ELM module through its PReLU; else as is (a pooled shortcut's PReLU is applied while pooling)
        prelu = p["kind"] == "identity" and type(act) is not nn.Identity
        p["r_mode"] = R_AFFINE if p["kind"] == "project" else R_PRELU if prelu else R_SRC
        p["rw"] = p["sw"] if prelu else ones
        self._consts = p
        if "_arrays" not in self.__dict__:
            self._arrays = BufferPool()
            self._chooser = kernels.ThreadChooser()  # one thread or all, whichever ran faster lately
        return True

    def want_input_margins(self, on: bool) -> None:
        """Ask for :meth:`input_margins` (``landscape.engine.audit.MarginRecorder`` does while it records): the
        previous fused module then computes them in the pass that packs this module's input."""
        self.__dict__["_want_margins"] = bool(on)

    def input_margins(self, u: Tensor) -> np.ndarray | None:
        """Per image, the smallest ``|u + shift|`` of this module's binary conv input: from the previous fused
        module when it packed ``u`` (:meth:`want_input_margins`), else from packing ``u`` here (kept for the
        forward that follows). The audit's binary margins without a second pass over ``u``."""
        handed = thread_slot(self, "_handed").get(tid())
        if handed is not None and handed[0] is u and handed[3] is not None:
            return handed[3]
        return self.conv.input_margins(u)

    def _take_packed_input(self, u: Tensor) -> np.ndarray | None:
        """The bits for this conv packed ahead: by the previous fused module if ``u`` is the tensor it produced,
        or by :meth:`input_margins` for ``u``."""
        handed = thread_slot(self, "_handed").pop(tid(), None)
        pre = self.conv.take_prepacked(u)
        if handed is not None:
            out, xp, producer, _ = handed
            if out is u:
                return xp
            producer._next = None  # its output reaches this module some other way: stop packing for it
            producer._unlinked = True  # (for good: relinking after a repack keeps it off)
        return pre

    def forward(self, u: Tensor) -> Tensor:
        p = self.__dict__.get("_consts")
        if (p is None or self.training or u.dtype != torch.float32 or u.device.type != "cpu" or u.dim() != 4
                or u.requires_grad):
            thread_slot(self, "_handed").pop(tid(), None)
            return super().forward(u)
        conv = self.conv
        xp = self._take_packed_input(u)
        u = u.contiguous()
        un = u.numpy()
        n, _, h_in, w_in = un.shape
        if xp is None:
            xp = conv.pack_input(un)
        _, c, h, w = conv.output_shape(n, h_in, w_in)
        buffers: BufferPool = self._arrays
        y = buffers.get("y", (n, c, h, w))
        conv.conv_packed(xp, h_in, w_in, y)
        threads = kernels.numba_get_threads()
        kind, src = p["kind"], un
        if kind == "pool":
            src = prelu_avgpool2x2(un, p["sw"], threads, buffers.get("src", pool_shape(un.shape)))
        elif kind == "project":
            parts = list(self.shortcut)
            t = (torch.from_numpy(prelu_avgpool2x2(un, p["sw"], threads, buffers.get("src", pool_shape(un.shape))))
                 if len(parts) == 3 else self.shortcut_act(u))
            src = parts[-2](t).contiguous().numpy()
        planes = (n, c, h * w)
        src3 = src.reshape(planes)
        v_is_r = not self.info_rcp or self.mix_with_shortcut
        v = src3
        if not v_is_r:
            v = (un if type(self.pool_input) is nn.Identity
                 else prelu_avgpool2x2(un, np.ones(un.shape[1], np.float32), threads,
                                       buffers.get("v", pool_shape(un.shape)))).reshape(planes)
        out = torch.from_numpy(buffers.get("out", (n, c, h, w)))
        nxt = self.__dict__.get("_next")
        bits = margins = None
        if nxt is not None:
            nconv = nxt[0].conv
            pad = nconv.padding
            shift = nconv.shift if nconv.shift is not None else np.zeros(c, np.float32)
            bits = (shift, buffers.get("bits", (n, h + 2 * pad, w + 2 * pad, n_words(c)), np.uint64), pad)
            if nxt[0].__dict__.get("_want_margins", False):
                margins = np.full(n, np.inf, np.float32)
        yn = y.reshape(planes)
        msum = np.zeros((n, c), np.float64)
        gate = np.ones((n, c), np.float32)
        mix = bool(self.info_rcp)
        args = (yn, src3, p["r_mode"], p["rw"], p["ra"], p["rb"], v, v_is_r, p["a"], p["b"], p["pw"], p["s"], p["s1"],
                mix, p["se"], gate, msum, mix, bool(self.elm), p["a2"], p["b2"], type(self.bn_out) is nn.BatchNorm2d,
                out.numpy().reshape(planes), bits, w)
        chooser: kernels.ThreadChooser = self._chooser
        if not mix or p["se_numba"]:
            chooser.run((0, planes), threads, lambda t: module_float(0, *args, t, margins))
        else:  # a non-standard SE (e.g. quantized convs): its torch modules between pass A and pass B
            chooser.run((1, planes), threads, lambda t: module_float(1, *args, t))
            se = self.se
            pooled = torch.from_numpy((msum / (h * w)).astype(np.float32)).view(n, c, 1, 1)
            gate[:] = se.gate(se.expand(se.act(se.squeeze(pooled)))).reshape(n, c).numpy()
            chooser.run((2, planes), threads, lambda t: module_float(2, *args, t, margins))
        if bits is not None:
            thread_slot(nxt[0], "_handed")[tid()] = (out, bits[1], self, margins)
        return out


def link_fused_modules(model: nn.Module) -> int:
    """Link each :class:`FusedInfoRCPModule` to the next in module order whose conv reads as many channels as it
    writes (the next in execution order in the zoo's sequential stacks); returns the number of links."""
    fused = [m for m in model.modules() if isinstance(m, FusedInfoRCPModule)]
    count = 0
    for a, b in zip(fused, fused[1:] + [None]):
        ok = (b is not None and b.conv.in_channels == a.conv.out_channels and "_consts" in b.__dict__
              and not a.__dict__.get("_unlinked", False))
        a._next = (b,) if ok else None  # a tuple: not registered as a child module
        count += ok
    return count


def refresh_fused_modules(model: nn.Module) -> None:
    """Recompute the per-point constants of every :class:`FusedInfoRCPModule` (after the weights changed)."""
    for m in model.modules():
        if isinstance(m, FusedInfoRCPModule):
            m.refresh()
    link_fused_modules(model)


def fuse_bnext_modules(model: nn.Module) -> int:
    """Swap every :func:`fusable_module` of ``model`` for a :class:`FusedInfoRCPModule` in place; returns the count."""
    count = retype_modules(model, fusable_module, FusedInfoRCPModule, accept=lambda m: m.refresh())
    link_fused_modules(model)
    return count
