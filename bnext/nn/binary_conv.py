"""The one binary convolution of the workbench.

Every binary layer of every model is a :class:`BinaryConv2d`, so the op counter, the
packed engine, the landscape tools and the quantizer find them by type.  It keeps the
latent real-valued weights; the forward pass

1. adds an optional learnable per-input-channel shift (ReActNet's RSign, BNext Info-RCP
   step 1) and binarizes the input with an activation binarizer (paper Eq. 1);
2. binarizes the weights progressively: ``clamp(w / tau, -1, 1)`` while the buffer
   ``tau`` is above :data:`SIGN_THRESHOLD`, ``sign(w)`` after, with an identity
   straight-through gradient to the latent ``w`` (optionally masked to ``|w| <= weight_clip``);
3. optionally scales each output channel by ``alpha = mean |W|`` (XNOR-Net, Bi-Real);
4. convolves.

``sign_zero`` is the value of sign(0), for inputs and weights alike: ``+1`` (default, paper Eq. 1,
what a packed kernel can store) or ``0`` (``torch.sign``, as the authors' BNext code computes; used
to reproduce an imported official checkpoint exactly where a value is exactly 0; not packable).

Padding convention: the *binarized* input is zero-padded (``pad_value = 0``), as the
reference BNext, Bi-Real and ReActNet code does.  A zero cannot be stored in one bit,
so the packed engine corrects the border outputs exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .binarizers import Binarizer, SignSTE, make_binarizer, sign

#: below this temperature the weights are pure ``sign(w)``
SIGN_THRESHOLD = 1e-6

SCALES = ("none", "mean_abs", "mean_abs_detached")
SIGN_ZEROS = (1, 0)


class BinaryConv2d(nn.Module):
    """Binary 2-D convolution with latent real weights (see module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``.
        act_binarizer: activation binarizer (name or object); ``None`` keeps real inputs.
        shift: add a learnable per-input-channel shift before binarizing (RSign).
        scale: ``"none"`` (BNext, BinaryNet), ``"mean_abs"`` (XNOR-Net: alpha with gradient)
            or ``"mean_abs_detached"`` (Bi-Real: alpha without gradient).
        weight_clip: mask the weight gradient to ``|w| <= weight_clip`` (Bi-Real: 1.0).
        init_std: if given, latent weights start as ``N(0, 1) * init_std`` (BNext: 1e-3).
        sign_zero: sign(0) of inputs and weights: ``1`` (Eq. 1, packable) or ``0`` (``torch.sign``).
    """

    pad_value: float = 0.0
    #: module that registers the packed XNOR engine as a ``landscape`` forward provider (imported by
    #: ``landscape.engine.providers`` when a model contains this layer; landscape never imports bnext itself)
    landscape_provider: str = "bnext.packed.forward"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        *,
        act_binarizer: str | Binarizer | None = "ste_sign",
        shift: bool = False,
        scale: str = "none",
        weight_clip: float | None = None,
        init_std: float | None = None,
        sign_zero: int = 1,
    ) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if sign_zero not in SIGN_ZEROS:
            raise ValueError(f"sign_zero must be 1 (paper Eq. 1) or 0 (torch.sign), got {sign_zero!r}")
        self.sign_zero = int(sign_zero)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.scale = scale
        self.weight_clip = weight_clip
        self.act_binarizer = make_binarizer(act_binarizer)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.shift = nn.Parameter(torch.zeros(1, in_channels, 1, 1)) if shift else None
        self.register_buffer("tau", torch.tensor(0.0))
        if init_std is None:
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default
        else:
            nn.init.normal_(self.weight, 0.0, init_std)

    # -- weights -------------------------------------------------------------------
    def binary_weight(self) -> Tensor:
        """Effective weight of the layer (progressive binarization, times ``alpha`` when scaled).

        The forward pass convolves with :meth:`unscaled_weight` and multiplies the result by
        :meth:`alpha` (same value in exact arithmetic; see :meth:`forward`).
        """
        wb = self.unscaled_weight()
        return wb if self.scale == "none" else wb * self.alpha()

    def alpha(self) -> Tensor:
        """Per-output-channel scale ``mean |W|`` of shape ``(O, 1, 1, 1)`` (detached for Bi-Real)."""
        alpha = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return alpha.detach() if self.scale == "mean_abs_detached" else alpha

    def unscaled_weight(self) -> Tensor:
        """``clamp(w / tau, -1, 1)`` or ``sign(w)`` with the straight-through gradient, without ``alpha``."""
        w = self.weight
        tau = float(self.tau)
        if tau > SIGN_THRESHOLD:
            target = torch.clamp(w / tau, -1.0, 1.0)
        else:
            target = sign(w) if self.sign_zero else torch.sign(w)
        if torch.is_grad_enabled() and w.requires_grad:
            # straight-through: forward value ``target``, gradient of the latent weight (of
            # clamp(w, -c, c) with ``weight_clip``: identity inside, zero outside)
            latent = w if self.weight_clip is None else torch.clamp(w, -self.weight_clip, self.weight_clip)
            wb = latent + (target - latent).detach()
        else:  # evaluation: exactly +-1 (no rounding from the STE arithmetic), and cheaper
            wb = target
        return wb

    @property
    def is_fully_binary(self) -> bool:
        """True when the forward uses pure ``sign(w)`` (tau at or below the threshold)."""
        return float(self.tau) <= SIGN_THRESHOLD

    # -- forward -------------------------------------------------------------------
    def binarize_input(self, x: Tensor) -> Tensor:
        if self.shift is not None:
            x = x + self.shift
        if self.act_binarizer is None:
            return x
        xb = self.act_binarizer(x)
        return xb if self.sign_zero else xb * (x != 0).to(xb.dtype)

    def forward(self, x: Tensor) -> Tensor:
        # Scaled layers convolve with the unscaled weight and multiply the result by alpha once:
        # equal to conv(x, W * alpha) in exact arithmetic, but conv of +-1 values is an exact
        # integer, so the output no longer depends on the conv algorithm's summation order (batch
        # size, memory format) and equals the packed engine's integer * alpha bit for bit.
        y = F.conv2d(self.binarize_input(x), self.unscaled_weight(), None, self.stride, self.padding)
        return y if self.scale == "none" else y * self.alpha().view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        s += f", padding={self.padding}, scale={self.scale!r}, shift={self.shift is not None}"
        if self.weight_clip is not None:
            s += f", weight_clip={self.weight_clip}"
        if not self.sign_zero:
            s += ", sign_zero=0"
        return s


# -- model-wide helpers ----------------------------------------------------------------
def binary_layers(model: nn.Module) -> Iterator[tuple[str, BinaryConv2d]]:
    """All ``(name, BinaryConv2d)`` pairs of a model."""
    for name, m in model.named_modules():
        if isinstance(m, BinaryConv2d):
            yield name, m


def set_tau(model: nn.Module, tau: float) -> int:
    """Set the progressive-binarization temperature of every binary layer; returns the count."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    n = 0
    for _, m in binary_layers(model):
        m.tau.fill_(float(tau))
        n += 1
    return n


def get_tau(model: nn.Module) -> float | None:
    """The temperature shared by the binary layers (max over layers), ``None`` if there are none."""
    taus = [float(m.tau) for _, m in binary_layers(model)]
    return max(taus) if taus else None


@torch.no_grad()
def clip_latent_weights_(model: nn.Module, bound: float = 1.5) -> None:
    """Clamp every latent binary weight to ``[-bound, bound]`` (reference training rule)."""
    for _, m in binary_layers(model):
        m.weight.clamp_(-bound, bound)


def is_binary_weight(model: nn.Module, param_name: str) -> bool:
    """True if ``param_name`` is the latent weight of a :class:`BinaryConv2d`."""
    mod_name, _, leaf = param_name.rpartition(".")
    return leaf == "weight" and isinstance(model.get_submodule(mod_name), BinaryConv2d)


__all__ = [
    "BinaryConv2d",
    "SIGN_THRESHOLD",
    "SignSTE",
    "binary_layers",
    "clip_latent_weights_",
    "get_tau",
    "is_binary_weight",
    "set_tau",
]
