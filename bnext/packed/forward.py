"""The packed engine as a *forward factory* for model-agnostic evaluators.

``landscape`` (and any other evaluator that perturbs weights and re-evaluates) takes a
``forward_factory(model) -> callable``, called after each change of the weights.  For binary
models :class:`PackedForward` packs once and then refreshes the packed weights in place
(:func:`repack_`) per call, so every evaluation runs through the XNOR-popcount kernels.

Importing this module registers the packed engine as ``landscape``'s ``"packed"`` forward provider
(:func:`register_landscape_provider`), so ``landscape.surface.compute_surface`` uses it by default
for models with :class:`~bnext.nn.BinaryConv2d` layers (``BinaryConv2d.landscape_provider`` names
this module, which the engine imports on demand).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .model import DEFAULT_THREADS, is_binary_model, pack, repack_

#: a packed batch keeps its largest float activation within this many bytes (memory-bound engine:
#: the float parts between binary convs stream their tensors, which should stay in the caches)
PACKED_BATCH_BYTES = 8 << 20
#: batch range of the packed engine's rule
PACKED_BATCH_RANGE = (32, 256)


class PackedForward:
    """Forward factory over :func:`pack`: packs once, then ``repack_`` per call."""

    #: its forward may run batches side by side on threads (what one layer hands the next is kept per
    #: thread, the kernels release the GIL and run single-threaded where torch does): the landscape
    #: engine then runs them on its single-threaded workers (``batch_workers``), ~2x a numba-parallel batch
    concurrent_batches = True

    def __init__(self, threads: int | None = None, fuse_float: bool = False) -> None:
        """``threads``: numba threads of the packed kernels; None = torch's thread count (what
        ``--threads`` sets), at most :data:`DEFAULT_THREADS`, so one setting governs every engine."""
        self._packed: Any = None
        self.threads = int(threads) if threads else max(1, min(DEFAULT_THREADS, torch.get_num_threads()))
        self.fuse_float = bool(fuse_float)
        self._peak_per_sample: int | None = None
        #: largest logit difference from the model on the probe that accepted this forward
        self.probe_diff: float | None = None

    def __call__(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        if self._packed is None:
            self._packed = pack(model, threads=self.threads, fuse_float=self.fuse_float)
        else:
            repack_(self._packed, model)
        return self._packed

    def reference_forward(self) -> Callable[[Tensor], Tensor] | None:
        """A forward bit-identical to the model's own at the current point, for the landscape engine's audit:
        the packed model with its fused float parts switched off (the unfused packed engine, README
        "Exactness"); the forward itself when nothing is fused."""
        if self._packed is None:
            return None
        if not self.fuse_float:
            return self._packed
        from .fused_bnext import FusedInfoRCPModule

        fused = [m for m in self._packed.model.modules() if isinstance(m, FusedInfoRCPModule)]
        packed = self._packed
        lock, running = threading.Lock(), [0]  # calls may overlap on worker threads: switch once for all

        def forward(x: Tensor) -> Tensor:
            with lock:
                if not running[0]:
                    for m in fused:  # a fused module in training mode runs its unfused (InfoRCPModule) forward
                        m.training = True
                running[0] += 1
            try:
                return packed(x)
            finally:
                with lock:
                    running[0] -= 1
                    if not running[0]:
                        for m in fused:
                            m.training = False

        return forward

    def margin_modules(self) -> list[nn.Module]:
        """The packed model's layers that binarize a float input (``sign(x + shift)``): the landscape engine
        hooks them to find the images closest to a flipped activation at each grid point."""
        if self._packed is None:
            return []
        from .fused_bnext import FusedInfoRCPModule
        from .layers import PackedBinaryConv2d

        return [m for m in self._packed.model.modules() if isinstance(m, FusedInfoRCPModule | PackedBinaryConv2d)]

    def batch_size(self, sample_shape: tuple[int, ...]) -> int:
        """Deterministic batch rule: the largest power of two in :data:`PACKED_BATCH_RANGE` whose largest
        float activation fits :data:`PACKED_BATCH_BYTES` (measured once with one sample)."""
        lo, hi = PACKED_BATCH_RANGE
        if self._packed is None:
            return lo
        if self._peak_per_sample is None:
            peak = [0]

            def hook(_m: nn.Module, _i: object, out: object) -> None:
                if isinstance(out, Tensor):
                    peak[0] = max(peak[0], out.numel() * out.element_size())

            mods = [m for m in self._packed.model.modules() if not list(m.children())]
            handles = [m.register_forward_hook(hook) for m in mods]
            try:
                self._packed(torch.zeros((1, *sample_shape)))
            finally:
                for h in handles:
                    h.remove()
            self._peak_per_sample = max(1, peak[0])
        fit = PACKED_BATCH_BYTES // self._peak_per_sample
        batch = hi
        while batch > lo and batch > fit:
            batch //= 2
        return batch

    def info(self) -> dict[str, Any]:
        """What the forward runs (stored by ``landscape`` in the surface file)."""
        return {"engine": "bnext.packed", "threads": self.threads, "batch_bytes": PACKED_BATCH_BYTES,
                "fused_float": self.fuse_float, "probe_diff": self.probe_diff}


def packed_forward_factory(model: nn.Module, probe: Tensor, *, required: bool,
                           exact: bool = False) -> PackedForward | None:
    """A :class:`PackedForward` if packing ``model`` reproduces it on ``probe``.

    The packed engine computes what the simulated model computes bit for bit (README "Exactness"),
    so the check is strict: within 1e-4 of the largest logit (``exact``: identical).  Unless ``exact``,
    the forward with fused float parts (:mod:`bnext.packed.fused_bnext`) is tried first under the same
    check, then the unfused one.
    With ``required=False`` a failure warns and returns ``None`` (use the torch forward);
    with ``required=True`` it raises ``RuntimeError`` naming the reason.
    """
    if not exact:
        from ..models.bnext import InfoRCPModule

        if any(type(m) is InfoRCPModule for m in model.modules()):
            fused = _checked(PackedForward(fuse_float=True), model, probe, exact=False)
            if isinstance(fused, PackedForward):
                return fused
    return _finish(_checked(PackedForward(), model, probe, exact=exact), required)


def _finish(result: PackedForward | str, required: bool) -> PackedForward | None:
    if isinstance(result, PackedForward):
        return result
    if required:
        raise RuntimeError(result)
    warnings.warn(f"{result}; falling back to the model's own forward (no BN folding, channels-last or Winograd "
                  "unless bit-identical on the probe, every point audited)", stacklevel=3)
    return None


def _checked(factory: PackedForward, model: nn.Module, probe: Tensor, *, exact: bool) -> PackedForward | str:
    """``factory`` if it reproduces ``model`` on ``probe`` (strict check above), else the reason."""
    try:
        with torch.inference_mode():
            ref = model.eval()(probe).float().cpu()
            got = factory(model)(probe)
        err = float((ref - got).abs().max())
    except Exception as exc:  # noqa: BLE001  (any packing failure means: fall back to torch)
        lines = str(exc).strip().splitlines() or [""]
        return f"packed engine refused this model ({type(exc).__name__}: {lines[0]})"
    limit = 0.0 if exact else 1e-4 * max(1.0, float(ref.abs().max()))
    if not err <= limit:
        return f"packed engine refused this model (differs from it by {err:.3g} on the probe, allowed {limit:.3g})"
    factory.probe_diff = err
    return factory


def _landscape_build(model: nn.Module, probe: Tensor, *, exact: bool) -> PackedForward | None:
    return packed_forward_factory(model, probe, required=False, exact=exact)


def register_landscape_provider() -> bool:
    """Register the packed engine as ``landscape``'s ``"packed"`` forward provider (CPU, binary models).

    Returns False when ``landscape`` is not importable (``bnext`` does not need it).
    """
    try:
        from landscape.engine.providers import register_forward_provider
    except ImportError:
        return False
    register_forward_provider("packed", is_binary_model, _landscape_build, devices=("cpu",))
    return True


register_landscape_provider()  # on import: landscape's default forward for binary models (no-op without landscape)
