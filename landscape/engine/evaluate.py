"""The evaluation engine: a model evaluated at grid points ``theta + x*dx + y*dy``.

See :mod:`landscape.surface` for what is computed. The defaults are the fast path:

* a registered forward provider (:mod:`landscape.engine.providers`; ``bnext.packed`` registers its
  XNOR-popcount engine for binary models on import) or, for other models, BatchNorm folded into
  plain convolutions (:mod:`landscape.engine.folding`) with channels-last inputs on the CPU, and on the CPU
  the 3x3 stride-1 convolutions that pay as Winograd F(4x4, 3x3) (:mod:`landscape.engine.winograd`, a rule
  by shape), each checked once against the model's own forward on a probe batch and dropped
  silently if it disagrees;
* a deterministic batch size (:mod:`landscape.engine.batching`);
* on CUDA, several grid points per forward (``torch.func.functional_call`` + ``vmap``).

Tolerance contract (:data:`TOLERANCE`, stated once here and in the README "Speed"): float work
done in another order (folding, channels-last, fused kernels, batch size) may flip the sign of a
binary network's pre-activation that lies within rounding distance of 0, so fast paths are not
bit-identical to the unfused float model. They promise, at every grid point, a relative loss
difference <= 5e-3 and an accuracy within 0.5 percentage points of the unfused float model
(tested on every zoo model). ``exact=True`` keeps bit-identity: the model's own forward (or a
provider's bit-identical one), no folding, NCHW, batch 128 (Li et al.'s), one point per forward.
The settings actually used are :attr:`SurfaceEngine.settings` (stored in surface files).
"""


from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bn import recalibrate_bn
from ..directions import Directions
from . import batching
from .folding import _FoldedPair, find_conv_bn_pairs, fold_batchnorm
from .providers import ForwardFactory, find_forward, register_forward_provider

__all__ = [
    "TOLERANCE",
    "EvalData",
    "ForwardFactory",
    "SurfaceEngine",
    "find_conv_bn_pairs",
    "fold_batchnorm",
    "register_forward_provider",
    "resolve_device",
]

EvalData = Mapping[str, tuple[Tensor, Tensor]]

#: the fast paths' promise at every grid point, against the unfused float model
TOLERANCE = {"loss_rel": 5e-3, "acc_points": 0.5}
#: a fast torch forward (folded BN, channels-last) must match the model's logits on the probe to this
#: fraction of the largest logit, else the engine runs the model as it is
PROBE_RTOL = 1e-5
#: the same for the Winograd convolutions (fp32 rounding ~1e-5 relative per layer, see landscape.engine.winograd)
WINOGRAD_PROBE_RTOL = 1e-3
PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------- the engine
@dataclass
class _Entry:
    name: str
    target: Tensor  # parameter (rebound) or buffer (written in place)
    is_param: bool
    offset: int
    numel: int
    view: bool  # the parameter's data is a view into the flat work buffer


class SurfaceEngine:
    """Evaluates ``model`` at grid points ``theta + x*dx + y*dy``; use as a context manager.

    ``data`` maps split names (``train``/``test``) to ``(inputs, targets)`` tensors. The model is
    restored on :meth:`close` (also on exceptions inside ``with``). Defaults are the fast path
    within :data:`TOLERANCE` (module docstring); ``exact=True`` is bit-identical to the model.

    Options: ``device`` (default CUDA when available; a model elsewhere is evaluated on a copy),
    ``batch_size`` (``"auto"``: the deterministic rule of :mod:`landscape.engine.batching`), ``forward``
    (``"auto"``: a registered provider such as the packed XNOR engine when one applies; ``"torch"``:
    the model's own), ``forward_factory`` (``model -> forward``, called after each point's weights
    are set; overrides ``forward``), ``fuse_bn`` (fold BN into plain convs; None = unless exact),
    ``channels_last`` (None = on the CPU unless exact), ``winograd`` (Winograd F(4x4, 3x3) for the
    3x3 convs :func:`landscape.engine.winograd.choose_algorithm` accepts; None = on the CPU in fp32 unless
    exact), ``precision`` (``"fp32"``, or ``"bf16"``
    autocast of the float parts: CPUs with AVX512-BF16, CUDA), ``bn_recalibrate`` (recompute BN
    statistics at every point from ``calibration`` inputs, default the train split), ``compile``
    (``torch.compile``) and ``points_per_forward`` (several points per forward via ``vmap``;
    ``"auto"`` = 4 on CUDA for the torch forward, else 1).
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Directions,
        data: EvalData,
        *,
        device: str | torch.device | None = None,
        batch_size: int | str = "auto",
        exact: bool = False,
        forward: str = "auto",
        fuse_bn: bool | None = None,
        bn_recalibrate: bool = False,
        calibration: Tensor | None = None,
        forward_factory: ForwardFactory | None = None,
        channels_last: bool | None = None,
        winograd: bool | None = None,
        precision: str = "fp32",
        compile: bool = False,
        points_per_forward: int | str = "auto",
    ):
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        if forward not in ("auto", "torch"):
            raise ValueError(f"forward must be 'auto' or 'torch', got {forward!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if exact and (precision != "fp32" or fuse_bn or channels_last or winograd):
            raise ValueError(
                "exact=True runs the model as it is: no precision='bf16', fuse_bn, channels_last or winograd"
            )
        if points_per_forward != "auto" and (not isinstance(points_per_forward, int) or points_per_forward < 1):
            raise ValueError(f"points_per_forward must be >= 1 or 'auto', got {points_per_forward!r}")
        if points_per_forward not in ("auto", 1) and (forward_factory is not None or bn_recalibrate):
            raise ValueError(
                "points_per_forward > 1 (vmap) cannot be combined with forward_factory or bn_recalibrate"
            )
        if not data:
            raise ValueError("data must hold at least one split, e.g. {'train': (inputs, targets)}")
        self.model = model
        self.directions = directions
        self.device = resolve_device(device)
        self.exact = bool(exact)
        self._batch_option = batch_size
        self.batch_size = 0 if batch_size == "auto" else int(batch_size)
        self.bn_recalibrate = bn_recalibrate
        self.forward_factory = forward_factory
        self._forward_option = forward
        cpu = self.device.type == "cpu"
        self.channels_last = (cpu and not exact) if channels_last is None else bool(channels_last)
        self._fuse = (not exact) if fuse_bn is None else bool(fuse_bn)
        self._fuse_explicit = fuse_bn is not None
        self._winograd = (cpu and not exact and precision == "fp32") if winograd is None else bool(winograd)
        self._winograd_explicit = winograd is not None
        self.conv_algorithms: dict[str, str] = {}
        self.winograd_epilogues = 0
        self.precision = precision
        self._ppf_auto = points_per_forward == "auto"
        if points_per_forward == "auto":
            vmap_ok = self.device.type == "cuda" and not exact and forward_factory is None and not bn_recalibrate
            points_per_forward = 4 if vmap_ok else 1
        self.points_per_forward = int(points_per_forward)
        self._opened = False
        self._compile = compile
        self._raw_data = data
        self._calibration = calibration
        self.fused_pairs = 0
        self.settings: dict[str, Any] = {}

    # ------------------------------------------------------------------ setup / teardown
    def open(self) -> SurfaceEngine:
        if self._opened:
            return self
        model = self.model
        first = next(iter(model.parameters()), None)
        if first is None:
            raise ValueError("the model has no parameters")
        self._owns_copy = first.device != self.device
        if self._owns_copy:
            import copy

            work = copy.deepcopy(model).to(self.device)
        else:
            work = model
        self.work = work
        self._flags = [(m, m.training) for m in work.modules()]
        self._grads = [(p, p.requires_grad) for p in work.parameters()]
        self._saved_params = [(p, p.data) for p in work.parameters()]
        self._saved_buffers = [(b, b.detach().clone()) for b in work.buffers()]
        try:
            self._setup(work)
        except BaseException:
            self._restore()
            raise
        self._opened = True
        return self

    def _setup(self, work: nn.Module) -> None:
        work.eval()
        params = dict(work.named_parameters())
        buffers = dict(work.named_buffers())
        dirs = self.directions.axes()
        entries, dx_parts, dy_parts, t0_parts = [], [], [], []
        flat_dtype = torch.float32
        for t in list(params.values()) + [b for b in buffers.values() if b.is_floating_point()]:
            if t.is_floating_point():
                flat_dtype = torch.promote_types(flat_dtype, t.dtype)
        offset = 0
        for name in self.directions.names:
            if name in params:
                target, is_param = params[name], True
            elif name in buffers and buffers[name].is_floating_point():
                target, is_param = buffers[name], False
            else:
                raise KeyError(f"direction entry {name!r} is not a floating parameter or buffer of the model")
            dx = dirs["x"][name]
            dy = dirs["y"][name] if "y" in dirs else None
            if tuple(dx.shape) != tuple(target.shape) or (
                dy is not None and tuple(dy.shape) != tuple(target.shape)
            ):
                raise ValueError(
                    f"direction entry {name!r} has shape {tuple(dx.shape)}, the model's is "
                    f"{tuple(target.shape)}"
                )
            if not bool(dx.any()) and (dy is None or not bool(dy.any())):
                continue  # never moves: leave the original tensor in place
            n = target.numel()
            entries.append(_Entry(name, target, is_param, offset, n, False))
            t0_parts.append(target.detach().reshape(-1).to(flat_dtype))
            dx_parts.append(dx.reshape(-1).to(self.device, flat_dtype))
            if dy is not None:
                dy_parts.append(dy.reshape(-1).to(self.device, flat_dtype))
            offset += n
        self._entries = entries
        empty = torch.zeros(0, dtype=flat_dtype, device=self.device)
        self._theta0 = torch.cat(t0_parts) if t0_parts else empty
        self._dx = torch.cat(dx_parts) if dx_parts else empty
        self._dy = torch.cat(dy_parts) if dy_parts else None
        self._flat = self._theta0.clone()
        self._tmp = torch.empty_like(self._theta0) if self._dy is not None else None
        for e in entries:
            chunk = self._flat[e.offset : e.offset + e.numel]
            if e.is_param and e.target.dtype == flat_dtype and e.target.is_contiguous():
                e.target.data = chunk.view(e.target.shape)
                e.view = True
            elif e.is_param:
                e.target.data = e.target.data.clone()  # private storage; the original is re-attached later
        self._data = {}
        for split, (xs, ys) in self._raw_data.items():
            if xs.shape[0] != ys.shape[0] or xs.shape[0] == 0:
                raise ValueError(f"data split {split!r}: {xs.shape[0]} inputs vs {ys.shape[0]} targets")
            self._data[split] = (xs.to(self.device), ys.to(self.device).long())
        if self._calibration is not None:
            self._calib = self._calibration.to(self.device)
        elif self.bn_recalibrate:
            self._calib = self._data.get("train", next(iter(self._data.values())))[0]
        self._bns = [
            m
            for m in work.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        self._forward: Callable[[Tensor], Tensor] = work
        self._pairs: list[_FoldedPair] = []
        probe = next(iter(self._data.values()))[0][:16]
        forward_name, check = "torch", None
        if self.forward_factory is not None:
            forward_name = "custom"
        elif self._forward_option == "auto" and (self._ppf_auto or self.points_per_forward == 1):
            found = find_forward(work, probe, device_type=self.device.type, exact=self.exact)
            if found is not None:
                forward_name, self.forward_factory = found
        if self._ppf_auto and self.points_per_forward > 1 and (forward_name != "torch" or not self._vmap_works(probe)):
            self.points_per_forward = 1  # a provider's forward, or a model vmap cannot run (custom autograd ops)
        cl = False
        if self.forward_factory is None and self.points_per_forward == 1:
            check, cl = self._setup_fast_torch(work, probe)
        self.channels_last = cl
        if cl:  # the data follow the forward's memory format (conv outputs keep it)
            self._data = {s: (xs.contiguous(memory_format=torch.channels_last) if xs.dim() == 4 else xs, ys)
                          for s, (xs, ys) in self._data.items()}
        if self._compile:
            self._forward = torch.compile(self._forward)
        preferred = getattr(self.forward_factory, "batch_size", None)
        if self.batch_size == 0:
            pref = preferred(tuple(probe.shape[1:])) if callable(preferred) and not self.exact else None
            self.batch_size = batching.resolve_batch_size(
                samples=max(xs.shape[0] for xs, _ in self._data.values()),
                device_type=self.device.type,
                exact=self.exact,
                preferred=pref,
                peak_bytes=1 if pref is not None else batching.peak_activation_bytes(work, work, probe),
            )
            if self.points_per_forward > 1:  # vmap: k points share each forward's memory
                self.batch_size = max(1, self.batch_size // self.points_per_forward)
        if not self.conv_algorithms and self.forward_factory is None:
            self.conv_algorithms = {n: "torch" for n, m in work.named_modules() if isinstance(m, nn.Conv2d)}
        info = getattr(self.forward_factory, "info", None)
        self.settings = {
            "forward": forward_name,
            "forward_info": info() if callable(info) else None,
            "exact": self.exact,
            "batch_size": self.batch_size,
            "batch_rule": "given" if self._batch_option != "auto" else "landscape.engine.batching",
            "bn_folded_pairs": self.fused_pairs,
            "channels_last": cl,
            "conv_algorithms": dict(self.conv_algorithms),
            "winograd_fused_epilogues": self.winograd_epilogues,
            "precision": self.precision,
            "points_per_forward": self.points_per_forward,
            "compile": bool(self._compile),
            "fast_path_probe_diff": check,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "tolerance": None if self.exact else dict(TOLERANCE),
        }

    def _vmap_works(self, probe: Tensor) -> bool:
        try:
            with torch.inference_mode():
                self._vmapped()(self._stacked([(0.0, 0.0), (0.0, 0.0)]), probe[:2])
        except Exception:  # noqa: BLE001 - e.g. autograd.Function without setup_context: one point per forward
            return False
        return True

    def _setup_fast_torch(self, work: nn.Module, probe: Tensor) -> tuple[float | None, bool]:
        """Fold BN, use channels-last and Winograd convs when they reproduce the model on ``probe``.

        Returns (the probe difference of the forward kept, channels-last used)."""
        fused, pairs = work, []
        if self._fuse:
            try:
                fused, pairs = fold_batchnorm(work)
            except Exception as exc:  # noqa: BLE001 - folding is an optimization only
                if self._fuse_explicit:
                    warnings.warn(f"BatchNorm folding skipped ({exc})", stacklevel=4)
        cl = self.channels_last and probe.dim() == 4
        wino = self._winograd and probe.dim() == 4
        if not pairs and not cl and not wino:
            return None, False
        xp = probe.contiguous(memory_format=torch.channels_last) if cl else probe
        with torch.inference_mode():
            ref = work(probe).float()
            got = fused(xp).float() if pairs or cl else ref
        scale = max(1.0, float(ref.abs().max()))
        diff = float((ref - got).abs().max())
        if not diff <= PROBE_RTOL * scale:
            if self._fuse_explicit and pairs:
                warnings.warn(
                    f"BatchNorm folding / channels-last changed the outputs by {diff:.3g}; "
                    "evaluating the model as it is",
                    stacklevel=4,
                )
            fused, pairs, cl = work, [], False
        self._forward, self._pairs = fused, pairs
        self.fused_pairs = len(pairs)
        if wino:
            diff = self._setup_winograd(fused, xp if cl else probe, ref, scale, diff)
        return diff, cl

    def _setup_winograd(self, fused: nn.Module, probe: Tensor, ref: Tensor, scale: float,
                        diff: float | None) -> float | None:
        """Wrap the convs :mod:`landscape.engine.winograd` accepts; keep them if the probe agrees within
        :data:`WINOGRAD_PROBE_RTOL` (records :attr:`conv_algorithms`)."""
        from .winograd import WINOGRAD, WinogradConv2d, winograd_model  # numba loads only when needed
        from .winograd_epilogue import fuse_epilogues

        wmodel, names = winograd_model(fused)
        if not names:
            return diff
        forward, self.winograd_epilogues = fuse_epilogues(wmodel, probe)
        with torch.inference_mode():
            got = forward(probe).float()
        wdiff = float((ref - got).abs().max())
        algos = {n: m.last_algorithm for n, m in wmodel.named_modules() if isinstance(m, WinogradConv2d)}
        if not wdiff <= WINOGRAD_PROBE_RTOL * scale or WINOGRAD not in algos.values():
            self.winograd_epilogues = 0
            if self._winograd_explicit:
                warnings.warn(f"Winograd convolutions changed the outputs by {wdiff:.3g}; not using them",
                              stacklevel=5)
            return diff
        self._forward = forward
        inner = {id(m.conv) for m in wmodel.modules() if isinstance(m, WinogradConv2d)}
        self.conv_algorithms = {
            n: (algos[n] or "torch") if n in algos else "torch"
            for n, m in wmodel.named_modules()
            if n in algos or (isinstance(m, nn.Conv2d) and id(m) not in inner)
        }
        return wdiff

    def _restore(self) -> None:
        for p, data in getattr(self, "_saved_params", []):
            p.data = data
        with torch.no_grad():
            for b, saved in getattr(self, "_saved_buffers", []):
                b.copy_(saved)
        for m, flag in getattr(self, "_flags", []):
            m.training = flag
        for p, flag in getattr(self, "_grads", []):
            p.requires_grad_(flag)
        for name in (
            "_flat",
            "_tmp",
            "_theta0",
            "_dx",
            "_dy",
            "_data",
            "_forward",
            "_pairs",
            "_entries",
            "_calib",
        ):
            self.__dict__.pop(name, None)

    def close(self) -> None:
        """Restore the model (weights, buffers, requires_grad, train/eval flags) and free buffers."""
        if self._opened or hasattr(self, "_saved_params"):
            self._restore()
        self._opened = False

    def __enter__(self) -> SurfaceEngine:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ evaluation
    def set_point(self, x: float, y: float = 0.0) -> None:
        """Write ``theta0 + x*dx + y*dy`` into the model's parameters (and moved buffers)."""
        if not self._opened:
            raise RuntimeError("SurfaceEngine is not open; use it as a context manager")
        with torch.inference_mode():
            # theta0 + (x*dx + y*dy), rounded like Li et al.'s tool (w + (d0*x + d1*y)) so both give
            # bitwise-equal weights: binary networks turn 1-ulp differences into sign flips.
            torch.mul(self._dx, float(x), out=self._flat)
            if self._dy is not None:
                torch.mul(self._dy, float(y), out=self._tmp)
                self._flat.add_(self._tmp)
            self._flat.add_(self._theta0)
            for e in self._entries:
                if not e.view:
                    e.target.data.copy_(self._flat[e.offset : e.offset + e.numel].view(e.target.shape))
            if self.bn_recalibrate:
                self._recalibrate()
            for pair in self._pairs:
                pair.refresh()

    def _recalibrate(self) -> None:
        """Recompute BN running statistics at the current point (cumulative average over the set)."""
        recalibrate_bn(self.work, self._calib, self.batch_size, self._bns)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _measure(self, forward: Callable[[Tensor], Tensor]) -> dict[str, float]:
        with self._autocast():
            return self._measure_splits(forward)

    def _measure_splits(self, forward: Callable[[Tensor], Tensor]) -> dict[str, float]:
        out = {}
        for split, (xs, ys) in self._data.items():
            loss = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            for s in range(0, xs.shape[0], self.batch_size):
                logits = _as_float(forward(xs[s : s + self.batch_size]))
                yb = ys[s : s + self.batch_size]
                loss += F.cross_entropy(logits, yb, reduction="sum").double()
                correct += (logits.argmax(dim=1) == yb).sum()
            n = xs.shape[0]
            out[f"{split}_loss"] = float(loss) / n
            out[f"{split}_acc"] = 100.0 * float(correct) / n
        return out

    def evaluate(self, x: float, y: float = 0.0) -> dict[str, float]:
        """``{'<split>_loss': mean cross-entropy, '<split>_acc': top-1 percent}`` at ``(x, y)``."""
        self.set_point(x, y)
        with torch.inference_mode():
            forward = self.forward_factory(self.work) if self.forward_factory is not None else self._forward
            return self._measure(forward)

    def _stacked(self, points: Sequence[tuple[float, float]]) -> dict[str, Tensor]:
        """Perturbed parameters of ``len(points)`` grid points stacked along a new first dimension."""
        k = len(points)
        xs_ = torch.tensor([p[0] for p in points], dtype=self._theta0.dtype, device=self.device)
        ys_ = torch.tensor([p[1] for p in points], dtype=self._theta0.dtype, device=self.device)
        stacked = {}
        for e in self._entries:
            sl = slice(e.offset, e.offset + e.numel)
            flat = self._theta0[sl][None] + xs_[:, None] * self._dx[sl][None]
            if self._dy is not None:
                flat = flat + ys_[:, None] * self._dy[sl][None]
            stacked[e.name] = flat.reshape(k, *e.target.shape).to(e.target.dtype)
        return stacked

    def _vmapped(self) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
        from torch.func import functional_call, vmap

        work = self.work

        def one(params: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(work, params, (xb,))

        return vmap(one, in_dims=(0, None))

    def evaluate_many(self, points: Sequence[tuple[float, float]]) -> list[dict[str, float]]:
        """Evaluate several points; with ``points_per_forward > 1`` they share forwards via ``vmap``."""
        if self.points_per_forward == 1 or len(points) == 1:
            return [self.evaluate(*p) for p in points]
        if not self._opened:
            raise RuntimeError("SurfaceEngine is not open; use it as a context manager")
        k = len(points)
        with torch.inference_mode():
            stacked = self._stacked(points)
            batched = self._vmapped()
            results: list[dict[str, float]] = [{} for _ in points]
            with self._autocast():
                for split, (xs, ys) in self._data.items():
                    loss = torch.zeros(k, dtype=torch.float64, device=self.device)
                    correct = torch.zeros(k, dtype=torch.int64, device=self.device)
                    for s in range(0, xs.shape[0], self.batch_size):
                        logits = _as_float(batched(stacked, xs[s : s + self.batch_size]))  # (k, B, C)
                        yb = ys[s : s + self.batch_size]
                        ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(k), reduction="none")
                        loss += ce.view(k, -1).sum(dim=1).double()
                        correct += (logits.argmax(dim=2) == yb[None]).sum(dim=1)
                    n = xs.shape[0]
                    for i in range(k):
                        results[i][f"{split}_loss"] = float(loss[i]) / n
                        results[i][f"{split}_acc"] = 100.0 * float(correct[i]) / n
        return results


def _as_float(logits: Tensor) -> Tensor:
    """Half-precision logits are promoted for the loss; float32/float64 are kept."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

