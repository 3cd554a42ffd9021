"""Checks that keep a fast path honest at every grid point, at bounded cost.

A fast forward (a registered provider, BN folding, channels-last, Winograd convolutions, another
batch size) does the float work in another order. For real-valued networks that moves the logits
by rounding (~1e-6 relative); for networks that binarize activations (sign) a pre-activation within
rounding distance of 0 can flip and move an image's logits by O(1), at any grid point, not only
where a one-off probe looked. The engine therefore (see :class:`landscape.engine.SurfaceEngine`):

* refuses BN folding, channels-last and Winograd for *sign-sensitive* models
  (:func:`is_sign_sensitive`) unless they are bit-identical on the probe;
* evaluates *batch-dependent* models (:func:`batch_dependence`) on the reference path at the
  reference batch size, since their values change with the batch;
* audits every point: the fast logits of :data:`AUDIT_SIZE` images per split are compared with the
  reference forward at that point (:func:`audit_share`: the point fails when they alone use more than
  :data:`AUDIT_SHARE` of the tolerance); the images are those whose binarized
  inputs came closest to 0 *in the fast forward at that point* (:class:`MarginRecorder`, hooks on the
  layers that binarize: a flip can only happen there) and those with the smallest top-2 logit margins
  (:func:`logit_margins`, where a flip changes the prediction). A point that fails is recomputed on
  the reference path and counted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the fast paths' promise at every grid point, against the unfused float model (re-exported as
#: ``landscape.engine.TOLERANCE``; see :mod:`landscape.engine.evaluate`)
TOLERANCE = {"loss_rel": 5e-3, "acc_points": 0.5}
#: images per split whose fast logits are checked against the reference forward at every point
AUDIT_SIZE = 16
#: the audited images go through the reference forward in batches of this many (side by side on the
#: engine's batch workers; fixed, so that the reference logits do not depend on the thread count)
AUDIT_CHUNK = 8
#: a point fails its audit when the audited images alone use more than this share of the tolerance
#: (the rest is left for images the audit did not look at)
AUDIT_SHARE = 0.5
#: a model is batch-dependent when the first half of the probe, run alone, moves a logit by more than this
BATCH_RTOL = 1e-4


def sign_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that binarize their input: those declaring ``landscape_binary = True`` or a forward
    provider (``landscape_provider``, e.g. ``bnext.nn.BinaryConv2d``), and subclasses of the torch
    conv/linear layers with their own ``forward`` (the usual way to write a binary layer)."""
    out = []
    for m in model.modules():
        cls = type(m)
        if getattr(m, "landscape_binary", False) or getattr(cls, "landscape_provider", None):
            out.append(m)
            continue
        for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear):
            if isinstance(m, base) and cls is not base and cls.forward is not base.forward:
                out.append(m)
                break
    return out


def is_sign_sensitive(model: nn.Module) -> bool:
    """Whether ``model`` has layers that binarize (:func:`sign_modules`): float reorderings may flip them."""
    return bool(sign_modules(model))


@torch.inference_mode()
def batch_dependence(model: nn.Module, probe: Tensor) -> str | None:
    """Why the eval-mode ``model`` computes an image's output from the rest of its batch, or None.

    BatchNorm layers without running statistics (``track_running_stats=False``) normalize with the
    batch's; any other such layer is caught by running the probe's first half alone and comparing.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (not m.track_running_stats or m.running_mean is None):
            return f"{name or type(m).__name__} normalizes with batch statistics (no running statistics)"
    if probe.shape[0] < 2:
        return None
    half = probe.shape[0] // 2
    whole = model(probe).float()[:half]
    alone = model(probe[:half]).float()
    diff = float((whole - alone).abs().max())
    if not diff <= BATCH_RTOL * max(1.0, float(whole.abs().max())):
        return f"the outputs of {half} probe images change by {diff:.3g} when run without the other {half}"
    return None


def _shift(m: nn.Module, like: Tensor) -> Tensor | None:
    """The per-channel shift a binarizing layer adds before sign (its own, or its ``conv``'s), as a tensor."""
    shift = getattr(m, "shift", None)
    if shift is None and isinstance(getattr(m, "conv", None), nn.Module):
        shift = getattr(m.conv, "shift", None)
    if isinstance(shift, np.ndarray):
        shift = torch.from_numpy(shift)
    if not isinstance(shift, Tensor) or shift.numel() != like.shape[1]:
        return None
    return shift.detach().to(like.device, like.dtype).reshape(1, -1, *([1] * (like.dim() - 2)))


class MarginRecorder:
    """Per image, the smallest ``|input + shift|`` that the given binarizing modules see during the
    forwards run inside ``with`` (set :attr:`start` to the batch's first row before each forward, on the
    thread that runs it: batches on different threads write disjoint rows)."""

    def __init__(self, modules: Sequence[nn.Module], n: int):
        self.modules = list(modules)
        self.margins = torch.full((n,), float("inf"))
        self._local = threading.local()  # batches may run side by side on worker threads (landscape.threads)
        self._handles: list = []

    @property
    def start(self) -> int:
        """First row of the batch the calling thread is running (set before each forward)."""
        return getattr(self._local, "start", 0)

    @start.setter
    def start(self, value: int) -> None:
        self._local.start = value

    def _hook(self, m: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            return
        s = self.start
        offered = getattr(m, "input_margins", None)  # a layer that computes them while binarizing x (packed)
        mins = offered(x) if callable(offered) else None
        if mins is not None:
            rows = self.margins[s : s + x.shape[0]]
            torch.minimum(rows, torch.as_tensor(mins, dtype=rows.dtype), out=rows)
            return
        shift = _shift(m, x)
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
            from .margins import min_abs_shift_  # numba: one read-only pass

            out = self.margins[s : s + x.shape[0]].numpy()
            min_abs_shift_(x.detach().numpy(), None if shift is None else shift.reshape(-1).numpy(), out)
            return
        v = (x + shift).abs_() if shift is not None else x.abs()
        mins = v.flatten(1).amin(1).float().cpu()
        self.margins[s : s + mins.shape[0]] = torch.minimum(self.margins[s : s + mins.shape[0]], mins)

    def _ask(self, on: bool) -> None:
        """Tell the modules that compute their input margins ahead (``want_input_margins``, e.g. a packed
        layer whose input bits another layer packs) whether they are being recorded."""
        for m in self.modules:
            want = getattr(m, "want_input_margins", None)
            if callable(want):
                want(on)

    def __enter__(self) -> MarginRecorder:
        self._handles = [m.register_forward_pre_hook(self._hook) for m in self.modules]
        self._ask(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._ask(False)
        for h in self._handles:
            h.remove()


def logit_margins(logits: Tensor) -> Tensor:
    """Per image, the gap between the two largest logits (a small gap: a flip can change the prediction)."""
    if logits.shape[1] < 2:
        return logits.new_zeros(logits.shape[0])
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def audit_indices(n: int, binary: Tensor | None, margins: Tensor, size: int = AUDIT_SIZE) -> Tensor:
    """``size`` distinct image indices: three quarters from the smallest ``binary`` margins (when given),
    the rest from the smallest logit ``margins``, sorted."""
    size = min(size, n)
    order = torch.argsort(margins.float().cpu(), stable=True)
    if binary is None:
        return order[:size].sort().values
    chosen: list[int] = []
    seen: set[int] = set()
    first = torch.argsort(binary.float().cpu(), stable=True)
    for src, limit in ((first.tolist(), (3 * size) // 4), (order.tolist(), size)):
        for i in src:
            if len(chosen) >= limit:
                break
            if i not in seen:
                seen.add(i)
                chosen.append(i)
    return torch.tensor(sorted(chosen), dtype=torch.long)


def audit_share(fast: Tensor, ref: Tensor, targets: Tensor, n: int, loss: float) -> float:
    """The share of :data:`landscape.engine.TOLERANCE` that the audited images alone use up: the summed
    per-image cross-entropy differences between the fast and the reference logits over the split's ``n``
    images, relative to the split's ``loss``, and the changed correct predictions in percentage points,
    each divided by its tolerance (the larger of the two; a point fails above :data:`AUDIT_SHARE`)."""
    if not ref.numel():
        return 0.0
    fast, ref = fast.double(), ref.double()
    dce = (F.cross_entropy(fast, targets, reduction="none") - F.cross_entropy(ref, targets, reduction="none")).abs()
    dcorrect = ((fast.argmax(1) == targets) != (ref.argmax(1) == targets)).sum()
    loss_share = float(dce.sum()) / n / max(abs(loss), 1e-12) / TOLERANCE["loss_rel"]
    acc_share = 100.0 * float(dcorrect) / n / TOLERANCE["acc_points"]
    share = max(loss_share, acc_share)
    return share if share == share else float("inf")
