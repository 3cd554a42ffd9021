"""Fused float parts of a packed BNext module: two numba passes instead of ~15 torch passes.

In a packed :class:`~bnext.models.bnext.InfoRCPModule` only the binary conv is bit-packed; the
float work around it (paper Fig. 3c and Fig. 4: BN -> PReLU -> recoupling ``s*v + (1-s)*x`` ->
SE pooling -> ``x * gate`` -> ELM ``x * r`` -> BN -> ``+ r``) streams the whole activation tensor
through memory once per torch op.  :class:`FusedInfoRCPModule` runs it as

1. pass A (one read of the conv output and of ``v``): ``x = PReLU(y * a + b)`` with the eval BN as a
   per-channel affine, the recoupling mix and its per-plane sum for the SE pooling;
2. the SE gate on the ``(N, C)`` means in torch (tiny);
3. pass B (one read of ``x`` and ``r``): ``(x * gate [* r]) * a2 + b2 + r``.

The shortcut ``r`` (PReLU, pooling, projection) stays in torch.  The float operations are the
module's own, in the same order, except the SE mean (float64 sum) and the BN affine form: results
agree with the unfused module to a few ulp, which may flip the sign of a next pre-activation within
rounding distance of 0 — the tolerance contract of ``landscape.engine.TOLERANCE`` (README "Speed"),
not bit-identity.  :func:`bnext.packed.pack` swaps these in only with ``fuse_float=True`` (the
landscape forward when not ``exact``); same children and state dict, so ``repack_`` works unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor, nn

from ..models.bnext import InfoRCPModule
from ..nn import SqueezeExpand
from .fusion import retype_modules
from .layers import PackedBinaryConv2d


@njit(parallel=True, cache=True)
def _pass_a(y, v, a, b, pw, s, s1, mix, msum):
    """In place on ``y`` (N, C, P): ``x = prelu(y*a + b)``; if ``mix``: ``msum[n, c] = sum(s*v + s1*x)``."""
    n_img, c_n, p_n = y.shape
    for t in prange(n_img * c_n):
        n = t // c_n
        c = t % c_n
        ac, bc, wc, sc, s1c = a[c], b[c], pw[c], s[c], s1[c]
        acc = 0.0
        for p in range(p_n):
            z = y[n, c, p] * ac + bc
            x = z if z > 0 else wc * z
            y[n, c, p] = x
            if mix:
                acc += np.float64(sc * v[n, c, p] + s1c * x)
        msum[n, c] = acc


@njit(parallel=True, cache=True)
def _pass_b(x, g, r, use_g, mul_r, a2, b2, use_bn, out):
    """``out = bn(x * g[n, c] [* r]) + r`` (bn as per-channel ``* a2 + b2`` when ``use_bn``)."""
    n_img, c_n, p_n = x.shape
    for t in prange(n_img * c_n):
        n = t // c_n
        c = t % c_n
        gc = g[n, c]
        ac, bc = a2[c], b2[c]
        for p in range(p_n):
            z = x[n, c, p]
            if use_g:
                z = z * gc
            rv = r[n, c, p]
            if mul_r:
                z = z * rv
            if use_bn:
                z = z * ac + bc
            out[n, c, p] = z + rv


def bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BN as ``x * a + b`` per channel (``a = weight / sqrt(var + eps)``, ``b = bias - mean * a``)."""
    invstd = 1.0 / torch.sqrt(bn.running_var.float() + bn.eps)
    a = invstd * bn.weight.float() if bn.weight is not None else invstd
    b = -bn.running_mean.float() * a
    if bn.bias is not None:
        b = bn.bias.float() + b
    return (np.ascontiguousarray(a.detach().numpy(), np.float32),
            np.ascontiguousarray(b.detach().numpy(), np.float32))


def _plain_bn(m: nn.Module) -> bool:
    return (type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_mean is not None
            and m.running_var is not None)


def fusable_module(m: nn.Module) -> bool:
    """True for an :class:`InfoRCPModule` whose conv is packed and whose float parts are the standard modules."""
    if type(m) is not InfoRCPModule or not isinstance(m.conv, PackedBinaryConv2d):
        return False
    c = m.conv.out_channels
    if not _plain_bn(m.bn) or type(m.act) is not nn.PReLU or m.act.weight.numel() not in (1, c):
        return False
    if m.info_rcp and (type(m.se) is not SqueezeExpand or not hasattr(m, "mix_weight")):
        return False
    return _plain_bn(m.bn_out) or type(m.bn_out) is nn.Identity


class FusedInfoRCPModule(InfoRCPModule):
    """An :class:`InfoRCPModule` (packed conv) whose float parts run as two numba passes (module docstring)."""

    conv: PackedBinaryConv2d

    def forward(self, u: Tensor) -> Tensor:
        if self.training or u.dtype != torch.float32 or u.device.type != "cpu" or u.dim() != 4 or u.requires_grad:
            return super().forward(u)
        u = u.contiguous()
        y = self.conv(u)  # fresh float32 NCHW, owned here: pass A overwrites it with x
        n, c, h, w = y.shape
        r = self.shortcut(self.shortcut_act(u)).contiguous()
        a, b = bn_affine(self.bn)
        pw = self.act.weight.detach().float().expand(c).contiguous().numpy()
        yn = y.numpy().reshape(n, c, h * w)
        msum = np.zeros((n, c), np.float64)
        if self.info_rcp:
            v = r if self.mix_with_shortcut else self.pool_input(u).contiguous()
            s = self.mix_weight.detach().float()
            s = s.clamp(0.0, 1.0) if self.clamp_mix else s
            s1 = (1.0 - s).reshape(-1).contiguous().numpy()
            s = s.reshape(-1).contiguous().numpy()
            _pass_a(yn, v.numpy().reshape(n, c, h * w), a, b, pw, s, s1, True, msum)
            pooled = torch.from_numpy((msum / (h * w)).astype(np.float32)).view(n, c, 1, 1)
            se = self.se
            gate = se.gate(se.expand(se.act(se.squeeze(pooled)))).reshape(n, c).contiguous().numpy()
        else:
            _pass_a(yn, yn, a, b, pw, pw, pw, False, msum)
            gate = np.ones((n, c), np.float32)
        if type(self.bn_out) is nn.BatchNorm2d:
            a2, b2 = bn_affine(self.bn_out)
        else:
            a2 = b2 = np.ones(c, np.float32)
        out = torch.empty_like(y)
        _pass_b(yn, gate, r.numpy().reshape(n, c, h * w), self.info_rcp, self.elm,
                a2, b2, type(self.bn_out) is nn.BatchNorm2d, out.numpy().reshape(n, c, h * w))
        return out


def fuse_bnext_modules(model: nn.Module) -> int:
    """Swap every :func:`fusable_module` of ``model`` for a :class:`FusedInfoRCPModule` in place; returns the count."""
    return retype_modules(model, fusable_module, FusedInfoRCPModule)
