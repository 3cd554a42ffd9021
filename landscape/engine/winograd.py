"""Winograd F(4x4, 3x3) convolution for the float fast path (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks", eq. 8: ``Y = A^T [(G g G^T) * (B^T d B)] A``).

A 3x3, stride-1 convolution computes each 4x4 output tile from a 6x6 input tile with 36 products per
(input, output) channel pair instead of 144: the input tiles are transformed (``B^T d B``), the 36
transformed positions are 36 independent matrix products ``(tiles, Cin) @ (Cin, Cout)`` (one
``torch.bmm``), and the output tiles are transformed back (``A^T m A``). The two transforms are numba
kernels over channels-last data (vectorized along channels, zero padding handled in the kernel); the
products run in chunks of tile rows small enough to stay in the CPU cache.

fp32 rounding differs from a direct convolution by ~1e-5 relative (see ``tests/landscape/test_winograd.py``
for the stated bound); the engine uses it only within :data:`landscape.engine.TOLERANCE` and never with
``exact=True``. Which convolutions use it is a rule by shape (:func:`choose_algorithm`), no timing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor, nn

from ..threads import cpu_workers, worker_pool

# numba's OpenMP pool spin-waits next to torch's (see bnext/packed/kernels.py); the workqueue layer sleeps.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

__all__ = [
    "CHUNK_BYTES",
    "WinogradConv2d",
    "choose_algorithm",
    "winograd_conv2d",
    "winograd_weights",
]

#: transformed-input bytes per chunk of tile rows (the chunk's input and product stay in the L2/L3 cache)
CHUNK_BYTES = 1 << 20
#: but at least this many tiles per chunk (rows of each of the 36 products)
MIN_CHUNK_TILES = 128

#: G of F(4x4, 3x3) (Lavin & Gray 2016, sec. 4.2): the 6x3 kernel transform
_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)


def winograd_weights(weight: Tensor, out: Tensor | None = None) -> Tensor:
    """``G g G^T`` of a ``(Cout, Cin, 3, 3)`` kernel as ``(36, Cin, Cout)`` float32 (into ``out`` if given)."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"winograd_weights needs a (Cout, Cin, 3, 3) kernel, got shape {tuple(weight.shape)}")
    c_out, c_in = weight.shape[:2]
    if weight.device.type != "cpu":
        g = _G.to(weight.device)
        u = torch.einsum("au,ocuv,bv->abco", g, weight.detach().double(), g)
        return u.reshape(36, c_in, c_out).float().contiguous()
    u = torch.empty(36, c_in, c_out) if out is None else out
    if u.shape != (36, c_in, c_out) or u.dtype != torch.float32 or not u.is_contiguous():
        raise ValueError(f"winograd_weights: out must be a contiguous float32 (36, {c_in}, {c_out}) tensor")
    _kernel_transform(weight.detach().float().contiguous().numpy(), u.numpy(), _G.float().numpy())
    return u


# ----------------------------------------------------------------------------- numba kernels
# float32 constants: an integer literal times a float32 is float64 in numba (half-width vectors + casts)
_F0, _F2, _F4, _F5, _F8 = (np.float32(v) for v in (0, 2, 4, 5, 8))


@njit(inline="always")
def _bt(d0, d1, d2, d3, d4, d5):  # pragma: no cover - compiled
    """One 6-point pass of the input transform ``B^T d`` (Lavin & Gray's F(4x4, 3x3))."""
    return (_F4 * d0 - _F5 * d2 + d4, d3 + d4 - _F4 * (d1 + d2), _F4 * (d1 - d2) + d4 - d3,
            _F2 * (d3 - d1) + d4 - d2, _F2 * (d1 - d3) + d4 - d2, _F4 * d1 - _F5 * d3 + d5)


@njit(inline="always")
def _at(m0, m1, m2, m3, m4, m5):  # pragma: no cover - compiled
    """One 6-point pass of the output transform ``A^T m`` (4 outputs)."""
    s12 = m1 + m2
    d12 = m1 - m2
    s34 = m3 + m4
    d34 = m3 - m4
    return m0 + s12 + s34, d12 + _F2 * d34, s12 + _F4 * s34, d12 + _F8 * d34 + m5

@njit(nogil=True, fastmath=True, cache=True)
def _input_transform(x, v, q0, q1, th, tw, pad):  # pragma: no cover - compiled
    """``v[:, (q - q0) * tw + tx, :] = B^T d B`` for tile rows ``q0 <= q < q1`` (q = n * th + ty).

    ``x``: (N, H, W, C) float32 (channels-last data); out-of-image rows/columns are zeros. The first pass
    (``B^T`` down the 6 rows) runs once per column of a tile row, shared by the two tiles that overlap there."""
    h = x.shape[1]
    w = x.shape[2]
    c_n = x.shape[3]
    cols = 4 * tw + 2
    r = np.zeros((6, cols, c_n), dtype=np.float32)  # B^T d of every column of the tile row (padding: zeros)
    d = np.zeros((6, c_n), dtype=np.float32)
    for q in range(q0, q1):
        n = q // th
        y0 = 4 * (q % th) - pad
        inside = y0 >= 0 and y0 + 6 <= h
        for j in range(cols):
            col = j - pad
            if col < 0 or col >= w:
                continue  # stays zero: r starts zeroed and such columns are never written
            if inside:
                for c in range(c_n):
                    r[0, j, c], r[1, j, c], r[2, j, c], r[3, j, c], r[4, j, c], r[5, j, c] = _bt(
                        x[n, y0, col, c], x[n, y0 + 1, col, c], x[n, y0 + 2, col, c],
                        x[n, y0 + 3, col, c], x[n, y0 + 4, col, c], x[n, y0 + 5, col, c])
            else:
                for i in range(6):
                    row = y0 + i
                    if row < 0 or row >= h:
                        for c in range(c_n):
                            d[i, c] = _F0
                    else:
                        for c in range(c_n):
                            d[i, c] = x[n, row, col, c]
                for c in range(c_n):
                    r[0, j, c], r[1, j, c], r[2, j, c], r[3, j, c], r[4, j, c], r[5, j, c] = _bt(
                        d[0, c], d[1, c], d[2, c], d[3, c], d[4, c], d[5, c])
        for tx in range(tw):
            t = (q - q0) * tw + tx
            j0 = 4 * tx
            for a in range(6):
                for c in range(c_n):
                    v[6 * a, t, c], v[6 * a + 1, t, c], v[6 * a + 2, t, c], v[6 * a + 3, t, c], v[6 * a + 4, t, c], \
                        v[6 * a + 5, t, c] = _bt(r[a, j0, c], r[a, j0 + 1, c], r[a, j0 + 2, c], r[a, j0 + 3, c],
                                                 r[a, j0 + 4, c], r[a, j0 + 5, c])


@njit(nogil=True, fastmath=True, cache=True)
def _output_transform(m, bias, y, res, add, q0, q1, th, tw, relu):  # pragma: no cover - compiled
    """``y[n, 4ty:4ty+4, 4tx:4tx+4, :] = A^T m A + bias`` (clipped at the image edge), ``+ res`` at the
    same place if ``add``, then ReLU if ``relu``."""
    h = y.shape[1]
    w = y.shape[2]
    k_n = y.shape[3]
    for q in range(q0, q1):
        n = q // th
        y0 = 4 * (q % th)
        r = np.empty((4, 6, k_n), dtype=np.float32)
        o = np.empty((4, k_n), dtype=np.float32)
        for tx in range(tw):
            t = (q - q0) * tw + tx
            x0 = 4 * tx
            for j in range(6):
                for c in range(k_n):
                    r[0, j, c], r[1, j, c], r[2, j, c], r[3, j, c] = _at(
                        m[j, t, c], m[6 + j, t, c], m[12 + j, t, c], m[18 + j, t, c], m[24 + j, t, c], m[30 + j, t, c])
            for i in range(4):
                if y0 + i >= h:
                    break
                for c in range(k_n):
                    o0, o1, o2, o3 = _at(r[i, 0, c], r[i, 1, c], r[i, 2, c], r[i, 3, c], r[i, 4, c], r[i, 5, c])
                    b = bias[c]
                    o[0, c] = o0 + b
                    o[1, c] = o1 + b
                    o[2, c] = o2 + b
                    o[3, c] = o3 + b
                if add:
                    for jj in range(min(4, w - x0)):
                        for c in range(k_n):
                            o[jj, c] += res[n, y0 + i, x0 + jj, c]
                if relu:
                    for jj in range(4):
                        for c in range(k_n):
                            o[jj, c] = max(o[jj, c], _F0)
                for jj in range(min(4, w - x0)):
                    for c in range(k_n):
                        y[n, y0 + i, x0 + jj, c] = o[jj, c]


@njit(parallel=True, fastmath=True, cache=True)
def _kernel_transform(w, u, g):  # pragma: no cover - compiled
    """``u[6a+b, c, o] = (G w[o, c] G^T)[a, b]``."""
    c_out = w.shape[0]
    c_in = w.shape[1]
    for c in prange(c_in):
        t = np.empty((6, 3, c_out), dtype=np.float32)
        for a in range(6):
            for v in range(3):
                for o in range(c_out):
                    t[a, v, o] = g[a, 0] * w[o, c, 0, v] + g[a, 1] * w[o, c, 1, v] + g[a, 2] * w[o, c, 2, v]
        for a in range(6):
            for b in range(6):
                for o in range(c_out):
                    u[6 * a + b, c, o] = g[b, 0] * t[a, 0, o] + g[b, 1] * t[a, 1, o] + g[b, 2] * t[a, 2, o]


# ----------------------------------------------------------------------------- the convolution
def winograd_conv2d(
    x: Tensor, u: Tensor, bias: Tensor | None = None, padding: int = 1, relu: bool = False,
    residual: Tensor | None = None, chunk_bytes: int = CHUNK_BYTES,
) -> Tensor:
    """3x3, stride-1 convolution of ``x`` (N, Cin, H, W) with transformed weights ``u`` (36, Cin, Cout).

    Equals ``F.conv2d(x, w, bias, 1, padding)`` (plus ``residual``, then ReLU if ``relu``) for
    ``u = winograd_weights(w)``
    up to fp32 rounding. CPU float32 only; returns a channels-last tensor.
    """
    if x.dim() != 4 or u.dim() != 3 or u.shape[0] != 36 or x.shape[1] != u.shape[1]:
        raise ValueError(
            f"winograd_conv2d: input {tuple(x.shape)} and transformed weights {tuple(u.shape)} do not fit; "
            "expected (N, Cin, H, W) and (36, Cin, Cout)"
        )
    if x.device.type != "cpu" or x.dtype != torch.float32 or u.dtype != torch.float32:
        raise ValueError(f"winograd_conv2d runs on CPU float32, got {x.dtype} on {x.device}, weights {u.dtype}")
    n, c_in, h, w = x.shape
    c_out = u.shape[2]
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    if ho < 1 or wo < 1:
        raise ValueError(f"winograd_conv2d: input {h}x{w} with padding {padding} gives no output")
    th, tw = (ho + 3) // 4, (wo + 3) // 4
    xn = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).numpy()
    out = torch.empty((n, c_out, ho, wo), dtype=torch.float32, memory_format=torch.channels_last)
    yn = out.permute(0, 2, 3, 1).numpy()
    if residual is not None:
        if tuple(residual.shape) != tuple(out.shape) or residual.dtype != torch.float32:
            raise ValueError(f"winograd_conv2d: residual {tuple(residual.shape)} {residual.dtype} does not match "
                             f"the output {tuple(out.shape)} float32")
        rn = residual.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).numpy()
    else:
        rn = yn  # unused
    b = (bias.detach().float().contiguous() if bias is not None else torch.zeros(c_out)).numpy()
    u = u.contiguous()
    rows = n * th
    tiles = max(MIN_CHUNK_TILES, chunk_bytes // (36 * max(c_in, c_out) * 4))
    threads = cpu_workers()
    # chunks of cache size, but at least one per thread (e.g. 512 channels at 4x4, batch 128: one tile row each)
    step = max(1, min(rows, -(-tiles // tw), -(-rows // threads)))
    chunks = [(q0, min(rows, q0 + step)) for q0 in range(0, rows, step)]

    def run(todo: Iterator[tuple[int, int]]) -> None:
        v_buf = torch.empty(36 * step * tw * c_in)
        m_buf = torch.empty(36 * step * tw * c_out)
        for q0, q1 in todo:
            t = (q1 - q0) * tw
            v = v_buf[: 36 * t * c_in].view(36, t, c_in)
            m = m_buf[: 36 * t * c_out].view(36, t, c_out)
            _input_transform(xn, v.numpy(), q0, q1, th, tw, padding)
            torch.bmm(v, u, out=m)
            _output_transform(m.numpy(), b, yn, rn, residual is not None, q0, q1, th, tw, relu)

    workers = min(threads, len(chunks))
    if workers <= 1:
        run(iter(chunks))
    else:  # each worker takes the next chunk (single-threaded kernels and products, no barrier per chunk)
        todo = _Shared(chunks)
        for f in [worker_pool(workers).submit(run, todo) for _ in range(workers)]:
            f.result()
    return out


class _Shared:
    """An iterator over ``items`` that several threads draw from (each item once)."""

    def __init__(self, items: list[tuple[int, int]]):
        self._items = items
        self._next = 0
        self._lock = threading.Lock()

    def __iter__(self) -> _Shared:
        return self

    def __next__(self) -> tuple[int, int]:
        with self._lock:
            if self._next >= len(self._items):
                raise StopIteration
            self._next += 1
            return self._items[self._next - 1]


# ----------------------------------------------------------------------------- the rule and the module
#: convolutions with fewer input or output channels stay with torch (thin products: the transforms dominate)
MIN_CHANNELS = 32
#: Winograd when at least this fraction of the 4x4 output tiles' pixels lies inside the output
MIN_TILE_USE = 0.5
WINOGRAD = "winograd_f4x4_3x3"
TORCH = "torch"


def choose_algorithm(conv: nn.Module, input_shape: tuple[int, ...] | None = None) -> str:
    """:data:`WINOGRAD` or :data:`TORCH` for ``conv`` on inputs of ``input_shape`` (N, C, H, W); a rule, no timing.

    Winograd for a plain ``nn.Conv2d`` (not a subclass) with a 3x3 kernel, stride 1, dilation 1, one
    group, zero padding, float32 weights, at least :data:`MIN_CHANNELS` input and output channels and,
    when the shape is given, 4x4 output tiles at least :data:`MIN_TILE_USE` full; torch otherwise.
    """
    ok = (
        type(conv) is nn.Conv2d
        and tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and conv.padding[0] == conv.padding[1]
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
        and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
    )
    if ok and input_shape is not None:
        p = int(conv.padding[0])
        ho, wo = input_shape[-2] + 2 * p - 2, input_shape[-1] + 2 * p - 2
        ok = ho >= 1 and wo >= 1 and ho * wo >= MIN_TILE_USE * 16 * ((ho + 3) // 4) * ((wo + 3) // 4)
    return WINOGRAD if ok else TORCH


#: serializes the weight transforms (several workers may run one module's forward at the same time)
_TRANSFORM_LOCK = threading.RLock()


class WinogradConv2d(nn.Module):
    """Runs ``conv`` (a plain 3x3 ``nn.Conv2d``) as a Winograd F(4x4, 3x3) convolution where the rule allows.

    ``conv``'s weight and bias are read at every forward: the transformed weights are recomputed
    whenever the weight differs from the copy they were made from (``torch.equal``, whatever changed
    it: an in-place write, a rebound ``.data``, a view of another buffer), so stale transformed
    weights cannot be used. Inputs the rule refuses (other shapes, dtypes, devices, autograd) go to
    ``conv`` itself; :attr:`last_algorithm` says what the last forward used. An epilogue fused by
    :mod:`landscape.engine.winograd_epilogue` (``relu``; ``forward(x, residual)`` adds ``residual``) runs
    inside the output transform.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if choose_algorithm(conv) != WINOGRAD:
            raise ValueError(f"WinogradConv2d needs a plain float32 3x3 stride-1 conv with >= {MIN_CHANNELS} "
                             f"channels, got {conv}")
        self.conv = conv
        self._src: Tensor | None = None
        self._u: Tensor | None = None
        self.last_algorithm: str | None = None
        self.relu = False

    def transformed_weights(self) -> Tensor:
        """``G g G^T`` of the conv's current weight (recomputed when the weight changed)."""
        with _TRANSFORM_LOCK:  # batches on several workers: one of them transforms, the others reuse
            return self._transformed_weights()

    def _transformed_weights(self) -> Tensor:
        w = self.conv.weight.detach()
        if self._src is None or self._src.shape != w.shape or not torch.equal(self._src, w):
            if self._src is None or self._src.shape != w.shape:
                self._src = torch.empty_like(w)
                self._u = None
            self._u = winograd_weights(w, self._u)  # in place: no fresh pages at every grid point
            self._src.copy_(w)
        assert self._u is not None
        return self._u

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        algo = choose_algorithm(self.conv, tuple(x.shape))
        if (
            algo != WINOGRAD
            or x.dim() != 4
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or (torch.is_grad_enabled() and (x.requires_grad or self.conv.weight.requires_grad))
        ):
            self.last_algorithm = TORCH
            y = self.conv(x)
            if residual is not None:
                y = y + residual
            return torch.relu(y) if self.relu else y
        self.last_algorithm = WINOGRAD
        u, pad = self.transformed_weights(), int(self.conv.padding[0])
        if residual is not None and not _fits(residual, x.shape[0], u.shape[2], x.shape[2] + 2 * pad - 2,
                                              x.shape[3] + 2 * pad - 2):
            y = winograd_conv2d(x, u, self.conv.bias, pad) + residual  # broadcast / promote: torch's own add
            return torch.relu(y) if self.relu else y
        return winograd_conv2d(x, u, self.conv.bias, pad, relu=self.relu, residual=residual)


def _fits(residual: Tensor, n: int, c: int, h: int, w: int) -> bool:
    """Whether ``residual`` can be added inside the output transform: a CPU float32 tensor of exactly the
    output's shape (anything else, e.g. a broadcast (1, C, 1, 1) offset, is added by torch afterwards)."""
    return (residual.dtype == torch.float32 and residual.device.type == "cpu"
            and tuple(residual.shape) == (n, c, h, w))


def winograd_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose convolutions accepted by :func:`choose_algorithm` run as :class:`WinogradConv2d`.

    The copy shares every parameter and buffer with ``model`` (same tensor objects, so weight changes
    show through); returns ``(copy, names of the wrapped convs)``, or ``(model, [])`` when none qualifies
    or when the model has a convolution subclass (binary convs: their ``sign`` would turn Winograd's
    rounding into flipped activations).
    """
    import copy

    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if any(type(m) is not nn.Conv2d for m in convs):
        return model, []  # a conv subclass (e.g. binary): its sign() would turn rounding changes into flips
    names = [n for n, m in model.named_modules() if choose_algorithm(m) == WINOGRAD]
    if not names:
        return model, []
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    out = copy.deepcopy(model, memo)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, WinogradConv2d(getattr(parent, child)))
    return out, names
