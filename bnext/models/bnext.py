"""BNext (Guo et al., "Join the High Accuracy Club on ImageNet with a Binary Neural Network Ticket").

Read next to paper Fig. 3c (the Info-RCP module) and Fig. 4 (block and family):

- :class:`InfoRCPModule` — one binary "Processor" and the BN that follows it, in its
  plain or ELM-Attention form; ``info_rcp=False`` removes recoupling and SE (Table 4).
- :class:`BNextBlock` — MobileNetV1-style block of BNext-T/S/M/L: a 3x3 module then one
  1x1 module (width kept) or two parallel 1x1 modules concatenated (width doubled).
- ``bnext_t/s/m/l`` (MobileNetV1 / ReActNet-A backbone, Table 1) and ``bnext18``
  (ResNet-18 backbone, section 5.2 and Fig. 1b/2).

Differences from the authors' code, by design: sign(0) = +1 (paper Eq. 1; the reference
leaves 0; option ``sign_zero=0`` gives theirs), and the recoupling weight is clamped to [0, 1] in
the forward pass (option ``clamp_mix=False`` gives theirs).  README "Differences from the authors' code" lists them all;
:func:`bnext.models.import_official` reads their checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn import BinaryConv2d, SqueezeExpand
from .common import ClassifierHead, PooledProjection, avg_pool2x2, is_small_input, resnet_stem, scaled
from .registry import register_model

#: latent binary weights start as N(0, 1) * 1e-3 (reference implementation)
LATENT_INIT_STD = 1e-3
#: STE clip of the activation sign (paper section 5.1)
ACT_CLIP = 1.5


class InfoRCPModule(nn.Module):
    """One BNext binary module (paper Fig. 3c) followed by its BN and shortcut (Fig. 4).

    Forward, with ``u`` the module input:

    1. ``x = PReLU(BN(BinaryConv(sign(u + shift))))``
    2. shortcut ``r``: ``u`` (2x2-pooled when strided, or avg-pool + 1x1 conv + BN when
       ``project``); for ELM-Attention the shortcut is taken of ``PReLU(u)``.
    3. Info-RCP (if ``info_rcp``): ``m = s * v + (1 - s) * x`` with ``s`` in [0, 1] per
       channel (init 0.5; clamped unless ``clamp_mix=False``, the authors' code) and ``v`` the
       pooled input (or ``r`` when ``mix_with_shortcut``);
       ``x = SE(m) * x``.
    4. Output: ELM-Attention ``BN(x * r) + r``; plain ``BN(x) + r``; plain without Info-RCP
       ``x + r``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        elm: bool = False,
        info_rcp: bool = True,
        project: bool = False,
        mix_with_shortcut: bool = False,
        sign_zero: int = 1,
        clamp_mix: bool = True,
    ) -> None:
        super().__init__()
        if not project and in_channels != out_channels:
            raise ValueError("an InfoRCPModule without projection must keep the channel count")
        self.elm = elm
        self.info_rcp = info_rcp
        self.mix_with_shortcut = mix_with_shortcut
        self.clamp_mix = clamp_mix
        self.conv = BinaryConv2d(
            in_channels, out_channels, kernel_size, stride,
            act_binarizer=f"ste_sign:{ACT_CLIP}", shift=True, init_std=LATENT_INIT_STD,
            sign_zero=sign_zero,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU(out_channels)
        self.shortcut_act = nn.PReLU(in_channels) if elm else nn.Identity()
        if project:
            self.shortcut: nn.Module = PooledProjection(in_channels, out_channels, stride)
        else:
            self.shortcut = avg_pool2x2() if stride != 1 else nn.Identity()
        self.pool_input = avg_pool2x2() if stride != 1 else nn.Identity()
        if info_rcp:
            self.mix_weight = nn.Parameter(torch.full((1, out_channels, 1, 1), 0.5))
            self.se = SqueezeExpand(out_channels, reduction=8)
        self.bn_out = nn.BatchNorm2d(out_channels) if (info_rcp or elm) else nn.Identity()

    def forward(self, u: Tensor) -> Tensor:
        x = self.act(self.bn(self.conv(u)))
        r = self.shortcut(self.shortcut_act(u))
        if self.info_rcp:
            v = r if self.mix_with_shortcut else self.pool_input(u)
            s = self.mix_weight.clamp(0.0, 1.0) if self.clamp_mix else self.mix_weight
            x = self.se(s * v + (1.0 - s) * x) * x
        if self.elm:
            return self.bn_out(x * r) + r
        return self.bn_out(x) + r


class BNextBlock(nn.Module):
    """BNext-T/S/M/L block: 3x3 module (carries the stride) then 1x1 module(s) (Fig. 4).

    Width kept: one 1x1 module C -> C.  Width doubled: two parallel 1x1 modules C -> C on
    the same input, concatenated (no real-valued projection anywhere).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, elm: bool, info_rcp: bool,
                 sign_zero: int = 1, clamp_mix: bool = True) -> None:
        super().__init__()
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(f"BNextBlock keeps or doubles the width, got {in_channels} -> {out_channels}")
        common = dict(info_rcp=info_rcp, sign_zero=sign_zero, clamp_mix=clamp_mix)
        self.spatial = InfoRCPModule(in_channels, in_channels, 3, stride, elm=elm, **common)
        self.pointwise = nn.ModuleList(
            InfoRCPModule(in_channels, in_channels, 1, 1, elm=False, **common)
            for _ in range(out_channels // in_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.spatial(x)
        outs = [pw(x) for pw in self.pointwise]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class BNextMobile(nn.Module):
    """BNext-T/S/M/L: stem C, stages 2C..32C, PReLU -> GAP -> Linear head (Table 1, Fig. 4)."""

    def __init__(
        self,
        base_width: int,
        blocks_per_stage: tuple[int, ...],
        *,
        num_classes: int,
        input_size: int,
        width: float,
        info_rcp: bool,
        elm_attention: bool,
        sign_zero: int = 1,
        clamp_mix: bool = True,
    ) -> None:
        super().__init__()
        c = scaled(base_width, width)
        stem_stride = 1 if is_small_input(input_size) else 2
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(c))
        blocks: list[nn.Module] = []
        index = 0
        cin = c
        for stage, n in enumerate(blocks_per_stage):
            cout = c * 2 ** (stage + 1)
            for j in range(n):
                index += 1  # 1-based: odd blocks plain, even blocks ELM-Attention
                stride = 2 if (stage > 0 and j == 0) else 1
                elm = elm_attention and index % 2 == 0
                blocks.append(BNextBlock(cin, cout, stride, elm=elm, info_rcp=info_rcp, sign_zero=sign_zero,
                                         clamp_mix=clamp_mix))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, num_classes, act=nn.PReLU(cin))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


class BNext18(nn.Module):
    """BNext-18: ResNet-18 backbone, block = ELM 3x3 module (strided) + plain 3x3 module.

    Downsample: avg pool 2x2 -> real 1x1 conv -> BN, applied to PReLU(input) to form the
    shortcut ``r``; the recoupling mix uses ``r``.  Head: PReLU -> GAP -> Linear.
    """

    def __init__(self, *, num_classes: int, input_size: int, width: float, info_rcp: bool,
                 elm_attention: bool, sign_zero: int = 1, clamp_mix: bool = True) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.stem = resnet_stem(widths[0], input_size, act=None)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                first = dict(elm=elm_attention, project=(stride != 1 or cin != cout))
                common = dict(info_rcp=info_rcp, mix_with_shortcut=True, sign_zero=sign_zero, clamp_mix=clamp_mix)
                blocks.append(nn.Sequential(
                    InfoRCPModule(cin, cout, 3, stride, **first, **common),
                    InfoRCPModule(cout, cout, 3, 1, elm=False, **common),
                ))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(cin, num_classes, act=nn.PReLU(cin))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


# Table 1 with the reference's block counts (ratios N:M doubled for the last four stages)
FAMILY = {
    "bnext_t": (32, (1, 2, 2, 6, 2)),
    "bnext_s": (48, (1, 2, 2, 6, 2)),
    "bnext_m": (48, (1, 4, 4, 8, 4)),
    "bnext_l": (64, (1, 4, 4, 16, 4)),
}


def _mobile(name: str, num_classes: int, input_size: int, width: float, info_rcp: bool,
            elm_attention: bool, sign_zero: int, clamp_mix: bool) -> nn.Module:
    base, blocks = FAMILY[name]
    return BNextMobile(base, blocks, num_classes=num_classes, input_size=input_size, width=width,
                       info_rcp=info_rcp, elm_attention=elm_attention, sign_zero=sign_zero, clamp_mix=clamp_mix)


@register_model
def bnext18(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
            info_rcp: bool = True, elm_attention: bool = True, sign_zero: int = 1,
            clamp_mix: bool = True) -> nn.Module:
    """BNext-18 (ResNet-18 backbone; paper Table 2, 3 and Fig. 2)."""
    return BNext18(num_classes=num_classes, input_size=input_size, width=width, info_rcp=info_rcp,
                   elm_attention=elm_attention, sign_zero=sign_zero, clamp_mix=clamp_mix)


@register_model
def bnext_t(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
            info_rcp: bool = True, elm_attention: bool = True, sign_zero: int = 1,
            clamp_mix: bool = True) -> nn.Module:
    """BNext-Tiny (C = 32, blocks 1,2,2,6,2)."""
    return _mobile("bnext_t", num_classes, input_size, width, info_rcp, elm_attention, sign_zero, clamp_mix)


@register_model
def bnext_s(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
            info_rcp: bool = True, elm_attention: bool = True, sign_zero: int = 1,
            clamp_mix: bool = True) -> nn.Module:
    """BNext-Small (C = 48, blocks 1,2,2,6,2)."""
    return _mobile("bnext_s", num_classes, input_size, width, info_rcp, elm_attention, sign_zero, clamp_mix)


@register_model
def bnext_m(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
            info_rcp: bool = True, elm_attention: bool = True, sign_zero: int = 1,
            clamp_mix: bool = True) -> nn.Module:
    """BNext-Middle (C = 48, blocks 1,4,4,8,4)."""
    return _mobile("bnext_m", num_classes, input_size, width, info_rcp, elm_attention, sign_zero, clamp_mix)


@register_model
def bnext_l(*, num_classes: int = 1000, input_size: int = 224, width: float = 1.0,
            info_rcp: bool = True, elm_attention: bool = True, sign_zero: int = 1,
            clamp_mix: bool = True) -> nn.Module:
    """BNext-Large (C = 64, blocks 1,4,4,16,4)."""
    return _mobile("bnext_l", num_classes, input_size, width, info_rcp, elm_attention, sign_zero, clamp_mix)
