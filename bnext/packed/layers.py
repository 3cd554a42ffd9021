"""``PackedBinaryConv2d``: the bit-packed replacement of a fully binarized :class:`BinaryConv2d`."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..nn import BinaryConv2d
from . import kernels
from .bits import n_words, pack_signs, unpack_signs
from .packing import pack_input_margins
from .threads import thread_slot, tid


class PackingError(ValueError):
    """A model or layer cannot be turned into a packed (1-bit) one."""


def check_packable(name: str, layer: BinaryConv2d) -> None:
    """Raise :class:`PackingError` unless ``layer`` computes ``conv(sign(x + shift), sign(W) [* alpha])``."""
    if not layer.is_fully_binary:
        raise PackingError(
            f"binary layer {name!r} is not fully binarized (tau={float(layer.tau):.3g}); the packed engine "
            f"needs tau <= SIGN_THRESHOLD (set it with bnext.nn.set_tau(model, 0.0) after training)"
        )
    if layer.act_binarizer is None:
        raise PackingError(
            f"binary layer {name!r} has real-valued inputs (act_binarizer=None); only layers with binary "
            f"activations can run as XNOR-popcount"
        )
    if not layer.sign_zero:
        raise PackingError(f"binary layer {name!r} has sign_zero=0 (sign(0) = 0 cannot be stored in one bit); "
                           f"rebuild the model with sign_zero=1 (paper Eq. 1) to pack it")


def weight_signs(layer: BinaryConv2d) -> np.ndarray:
    """Boolean ``(O, I, k, k)`` array, True where the effective weight is ``-1`` (sign(0) = +1)."""
    return (layer.weight.detach().cpu() < 0).numpy()


def layer_alpha(layer: BinaryConv2d) -> np.ndarray | None:
    """Per-output-channel ``alpha = mean |W|`` exactly as the simulated layer computes it, or None."""
    if layer.scale == "none":
        return None
    w = layer.weight.detach().cpu().float()
    return w.abs().mean(dim=(1, 2, 3)).numpy().astype(np.float32)


def kernel_weights(negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-form weights and tap sums from the ``(O, I, k, k)`` sign bits.

    Returns ``(wt, tapsum)``: ``wt`` 1-D uint64 tiles ``[O_pad/OT][k*k*words][OT]`` and
    ``tapsum`` ``(k*k, O_pad)`` int32 with ``tapsum[tap, o] = sum_c sign(W[o, c, tap])``.
    """
    o, i, kh, kw = negative.shape
    words = pack_signs(negative.transpose(0, 2, 3, 1))  # (O, k, k, Wd)
    length = kh * kw * n_words(i)
    o_pad = -(-o // kernels.OT) * kernels.OT
    flat = np.zeros((o_pad, length), np.uint64)
    flat[:o] = words.reshape(o, length)
    wt = np.ascontiguousarray(flat.reshape(o_pad // kernels.OT, kernels.OT, length).transpose(0, 2, 1)).reshape(-1)
    neg_per_tap = negative.sum(axis=1).reshape(o, kh * kw)  # (O, k*k) count of -1 per tap
    tapsum = np.zeros((kh * kw, o_pad), np.int32)
    tapsum[:, :o] = (i - 2 * neg_per_tap).T
    return wt, tapsum


class PackedBinaryConv2d(nn.Module):
    """Binary convolution with 1-bit weights: ``conv(sign(x + shift), sign(W)) [* alpha]`` by XNOR-popcount.

    Input and output are NCHW float32 tensors, so the real-valued modules around it run
    unchanged; the input is binarized and packed on the fly (NHWC uint64 words), and the
    zero padding of the binarized input is corrected exactly at the border.

    Attributes (plain numpy, built at pack time): ``wt``/``tapsum`` kernel form (the only copy
    of the weights; :attr:`signs` unpacks them), ``alpha`` (O,) or None, ``shift`` (I,) or None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 scale: str = "none") -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = int(padding)
        self.scale = scale
        self._chooser = kernels.ThreadChooser()  # kept across repacks: timings depend on shapes only
        self.set_weights(np.zeros((self.out_channels, self.in_channels, self.kernel_size, self.kernel_size), bool),
                         None if scale == "none" else np.ones(self.out_channels, np.float32), None)

    @classmethod
    def from_layer(cls, layer: BinaryConv2d, name: str = "") -> PackedBinaryConv2d:
        """Pack a fully binarized :class:`BinaryConv2d` (raises :class:`PackingError` otherwise)."""
        check_packable(name, layer)
        packed = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.scale)
        packed.load_from(layer, name)
        return packed

    def metadata(self) -> dict:
        """Geometry of the layer as plain types (file header)."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding, "scale": self.scale, "shift": self.shift is not None}

    # -- weights -------------------------------------------------------------------
    def load_from(self, layer: BinaryConv2d, name: str = "") -> None:
        """(Re)pack weights, alpha and shift from a fully binarized ``BinaryConv2d`` of the same shape."""
        check_packable(name, layer)
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        geometry = (layer.stride, layer.padding, layer.scale)
        if tuple(layer.weight.shape) != shape or geometry != (self.stride, self.padding, self.scale):
            raise PackingError(f"cannot repack layer {name!r} of shape {tuple(layer.weight.shape)}, "
                               f"(stride, padding, scale)={geometry} into one of {shape}, "
                               f"{(self.stride, self.padding, self.scale)}")
        self.set_weights(weight_signs(layer), layer_alpha(layer),
                         None if layer.shift is None else layer.shift.detach().cpu().float().numpy().reshape(-1))

    def set_weights(self, negative: np.ndarray, alpha: np.ndarray | None, shift: np.ndarray | None) -> None:
        """Install sign bits ``(O, I, k, k)`` (True = -1), optional alpha ``(O,)`` and shift ``(I,)``."""
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        if negative.shape != shape:
            raise PackingError(f"sign bits of shape {negative.shape} do not fit a layer of shape {shape}")
        if (alpha is None) != (self.scale == "none"):
            raise PackingError(f"alpha must be given exactly when scale != 'none' (scale={self.scale!r})")
        if alpha is not None and np.size(alpha) != self.out_channels:
            raise PackingError(f"alpha has {np.size(alpha)} values, expected {self.out_channels}")
        if shift is not None and np.size(shift) != self.in_channels:
            raise PackingError(f"shift has {np.size(shift)} values, expected {self.in_channels}")
        self.wt, self.tapsum = kernel_weights(np.asarray(negative, dtype=bool))
        self._corrections: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._plans: dict[tuple, tuple] = {}  # (xp.shape, h, w) -> (output shape, correction, k_total)
        self.alpha = None if alpha is None else np.ascontiguousarray(alpha, dtype=np.float32)
        self.alpha_pad = np.ones(self.tapsum.shape[1], np.float32)  # kernel form: padded, ones when unscaled
        if self.alpha is not None:
            self.alpha_pad[: self.out_channels] = self.alpha
        self.shift = None if shift is None else np.ascontiguousarray(shift, dtype=np.float32)

    @property
    def packed_bytes(self) -> int:
        """Bytes of the 1-bit weights (exactly O*I*k*k bits, rounded up to bytes)."""
        return (self.out_channels * self.in_channels * self.kernel_size**2 + 7) // 8

    @property
    def signs(self) -> np.ndarray:
        """The weight signs as a boolean ``(O, I, k, k)`` array (True = -1), unpacked from the kernel form."""
        o, i, k = self.out_channels, self.in_channels, self.kernel_size
        words = n_words(i)
        tiles = self.wt.reshape(-1, k * k * words, kernels.OT).transpose(0, 2, 1).reshape(-1, k, k, words)[:o]
        return unpack_signs(tiles, i).transpose(0, 3, 1, 2)

    @property
    def weight_nbytes(self) -> int:
        """Bytes held for inference: the packed weights (kernel form, padded) plus tap sums and alpha."""
        return self.wt.nbytes + self.tapsum.nbytes + (0 if self.alpha is None else self.alpha_pad.nbytes)

    # -- forward -------------------------------------------------------------------
    def output_shape(self, n: int, h: int, w: int) -> tuple[int, int, int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return n, self.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def pack_input(self, x: np.ndarray) -> np.ndarray:
        """Binarize and pack an NCHW float32 array into the zero-bordered NHWC word buffer."""
        n, c, h, w = x.shape
        if c != self.in_channels or x.dtype != np.float32 or not x.flags.c_contiguous:
            raise ValueError(f"expected a C-contiguous float32 (N, {self.in_channels}, H, W) array, "
                             f"got {x.dtype} {x.shape}")
        p = self.padding
        xp = np.zeros((n, h + 2 * p, w + 2 * p, n_words(c)), np.uint64)
        shift = self.shift if self.shift is not None else np.zeros(1, np.float32)
        kernels.pack_input(x, shift, self.shift is not None, p, xp)
        return xp

    def _check_packed(self, xp: np.ndarray, h: int, w: int) -> None:
        p = self.padding
        expected = (h + 2 * p, w + 2 * p, n_words(self.in_channels))
        if xp.dtype != np.uint64 or xp.ndim != 4 or xp.shape[1:] != expected or not xp.flags.c_contiguous:
            raise ValueError(f"packed input must be C-contiguous uint64 (N, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got {xp.dtype} {xp.shape}")

    def _correction(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        correction = self._corrections.get((h, w))
        if correction is None:
            _, _, h_out, w_out = self.output_shape(1, h, w)
            correction = kernels.border_correction(self.tapsum, self.kernel_size, self.stride, self.padding, h, w,
                                                   h_out, w_out)
            self._corrections[(h, w)] = correction
        return correction

    def conv_bits(self, xp: np.ndarray, h: int, w: int, lo: np.ndarray, hi: np.ndarray, yp: np.ndarray,
                  y_pad: int) -> np.ndarray:
        """XNOR-popcount conv writing packed bits ``lo <= y <= hi`` (per channel) into the interior of ``yp``."""
        if self.scale != "none":
            raise PackingError("packed-bit outputs need an unscaled layer (the intervals are in integer units)")
        self._check_packed(xp, h, w)
        n = xp.shape[0]
        _, _, h_out, w_out = self.output_shape(n, h, w)
        words = n_words(self.out_channels)
        if yp.dtype != np.uint64 or yp.ndim != 4 or yp.shape[0] != n or yp.shape[3] != words \
                or yp.shape[1] < h_out + 2 * y_pad or yp.shape[2] < w_out + 2 * y_pad or not yp.flags.c_contiguous:
            raise ValueError(f"bit output must be C-contiguous uint64 (N, >= {h_out + 2 * y_pad}, "
                             f">= {w_out + 2 * y_pad}, {words}), got {yp.dtype} {yp.shape}")
        correction = self._correction(h, w)
        k_total = self.kernel_size * self.kernel_size * self.in_channels

        def run(t: int) -> None:
            kernels.binary_conv_bits(xp, self.wt, self.kernel_size, self.stride, self.padding, k_total, correction,
                                     lo, hi, h_out, w_out, yp, y_pad, t)

        self._chooser.run(("bits", n, h, w), kernels.numba_get_threads(), run)
        return yp

    def conv_packed(self, xp: np.ndarray, h: int, w: int, out: np.ndarray | None = None) -> np.ndarray:
        """Run the XNOR-popcount kernel on a packed input of spatial size ``(h, w)``."""
        plan = self._plans.get((xp.shape, h, w))
        if plan is None:  # validate the geometry once per input shape (a layer runs at a few sizes)
            self._check_packed(xp, h, w)
            k_total = self.kernel_size * self.kernel_size * self.in_channels
            correction = self._correction(h, w)
            kernels.check_k_total(k_total)
            plan = (self.output_shape(xp.shape[0], h, w), correction, k_total,
                    (self.wt, self.kernel_size, self.stride, k_total, self.alpha_pad, *correction, 1, 1))
            self._plans[(xp.shape, h, w)] = plan
        elif xp.dtype != np.uint64 or not xp.flags.c_contiguous:
            self._check_packed(xp, h, w)
        shape, correction, k_total, serial_args = plan
        if out is None:
            out = np.empty(shape, np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32 {shape}, got {out.dtype} {out.shape}")
        threads = kernels.numba_get_threads()
        if threads <= 1:  # no choice to make: straight to the one-thread kernel (binary_conv's path, checked above)
            kernels._binary_conv_serial(xp, *serial_args, out)
            return out

        def run(t: int) -> None:
            kernels.binary_conv(xp, self.wt, self.kernel_size, self.stride, self.padding, k_total, self.alpha_pad,
                                correction, out, t)

        self._chooser.run((xp.shape[0], h, w), threads, run)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.dtype == torch.float32 and x.device.type == "cpu" and not x.requires_grad and x.is_contiguous():
            xn = x.numpy()  # the common case, without the conversion calls (microseconds per layer)
        else:
            xn = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        n, _, h, w = xn.shape
        out = np.empty(self.output_shape(n, h, w), np.float32)
        pre = self.take_prepacked(x)  # packed by input_margins (the audit's hook) for this x
        self.conv_packed(pre if pre is not None else self.pack_input(xn), h, w, out)
        return torch.from_numpy(out)

    def take_prepacked(self, x: Tensor) -> np.ndarray | None:
        """The words :meth:`input_margins` packed for ``x`` on this thread (then forgotten), or None."""
        pre = thread_slot(self, "_prepacked").pop(tid(), None)
        return pre[1] if pre is not None and pre[0] is x else None

    def input_margins(self, x: Tensor) -> np.ndarray | None:
        """Per image, the smallest ``|x + shift|`` of this layer's input ``x``, computed while packing ``x``
        (kept for the forward that follows with the same tensor): the binary margin the landscape engine's
        audit records (:class:`landscape.engine.audit.MarginRecorder`) without a second pass. None for an
        input the fast path does not take."""
        if not (x.dim() == 4 and x.shape[1] == self.in_channels and x.dtype == torch.float32
                and x.device.type == "cpu" and not x.requires_grad and x.is_contiguous()):
            return None
        xn = x.numpy()
        n, c, h, w = xn.shape
        p = self.padding
        xp = np.zeros((n, h + 2 * p, w + 2 * p, n_words(c)), np.uint64)
        margins = np.full(n, np.inf, np.float32)
        shift = self.shift if self.shift is not None else np.zeros(1, np.float32)
        pack_input_margins(xn, shift, self.shift is not None, p, xp, margins)
        thread_slot(self, "_prepacked")[tid()] = (x, xp)
        return margins

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, scale={self.scale!r}, shift={self.shift is not None}, 1-bit")


class PackedMaxPool2d(nn.Module):
    """Exact numba replacement of ``nn.MaxPool2d`` (square kernel, no dilation/ceil mode/indices).

    Max is exact, so the values equal torch's bit for bit (NaN propagates the same way); torch's
    CPU ``max_pool2d`` also computes indices and was the single most expensive op of a packed
    BNext-18 at 224 (the stem's 64x112x112 pool).
    """

    def __init__(self, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = int(padding)
        self._chooser = kernels.ThreadChooser()

    @staticmethod
    def supports(pool: nn.MaxPool2d) -> bool:
        def single(v):
            return v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else None)

        k, s, p, d = (single(pool.kernel_size), single(pool.stride or pool.kernel_size), single(pool.padding),
                      single(pool.dilation))
        return None not in (k, s, p, d) and d == 1 and not pool.ceil_mode and not pool.return_indices

    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> PackedMaxPool2d:
        def single(v):
            return v if isinstance(v, int) else v[0]

        return cls(single(pool.kernel_size), single(pool.stride or pool.kernel_size), single(pool.padding))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
            return torch.nn.functional.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        xn = x.detach().contiguous().numpy()
        n, c, h, w = xn.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        out = torch.empty(n, c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        on = out.numpy()
        self._chooser.run((n, c, h, w), kernels.numba_get_threads(),
                          lambda t: kernels.maxpool2d(xn, on, k, s, p, t))
        return out

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
