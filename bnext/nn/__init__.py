"""Binarization core: binarizers (sign + STE, ApproxSign) and the binary convolution."""

from .binarizers import ApproxSign, Binarizer, SignSTE, make_binarizer, sign
from .binary_conv import (
    SIGN_THRESHOLD,
    BinaryConv2d,
    binary_layers,
    clip_latent_weights_,
    get_tau,
    is_binary_weight,
    set_tau,
)
from .layers import SqueezeExpand

__all__ = [
    "SIGN_THRESHOLD",
    "ApproxSign",
    "Binarizer",
    "BinaryConv2d",
    "SignSTE",
    "SqueezeExpand",
    "binary_layers",
    "clip_latent_weights_",
    "get_tau",
    "is_binary_weight",
    "make_binarizer",
    "set_tau",
    "sign",
]
