"""The evaluation engine: a model evaluated at grid points ``theta + x*dx + y*dy``.

See :mod:`landscape.surface` for what is computed. The defaults are the fast path:

* a registered forward provider (:mod:`landscape.engine.providers`; ``bnext.packed`` registers its
  XNOR-popcount engine for binary models on import) or, for other models, BatchNorm folded into
  plain convolutions (:mod:`landscape.engine.folding`) with channels-last inputs on the CPU, and on the CPU
  the 3x3 stride-1 convolutions that pay as Winograd F(4x4, 3x3) (:mod:`landscape.engine.winograd`, a rule
  by shape), each checked against the model's own forward on a probe batch and dropped if it
  disagrees; for models that binarize (:func:`landscape.engine.audit.is_sign_sensitive`) folding,
  channels-last and Winograd are kept only when bit-identical on the probe;
* a deterministic batch size (:mod:`landscape.engine.batching`), except for models whose outputs
  depend on the batch (:func:`landscape.engine.audit.batch_dependence`), which run on the reference
  path at the reference batch size;
* on CUDA, several grid points per forward (``torch.func.functional_call`` + ``vmap``).

Tolerance contract (:data:`TOLERANCE`, stated once here and in the README "Speed"): float work
done in another order (folding, channels-last, fused kernels, batch size) may flip the sign of a
binary network's pre-activation that lies within rounding distance of 0, so fast paths are not
bit-identical to the unfused float model. They promise, at every grid point, a relative loss
difference <= 5e-3 and an accuracy within 0.5 percentage points of the unfused float model. The
promise is checked at every point (:mod:`landscape.engine.audit`): the images most at risk are
re-run through the model's own forward, and a point that disagrees, or where the fast path fails,
is recomputed on the reference path (the model's own forward, fp32, NCHW, the reference batch),
said once and counted (:attr:`SurfaceEngine.counters`). ``precision="bf16"`` is outside the
contract: its deviation is measured and stored instead. ``exact=True`` keeps bit-identity: the
model's own forward (or a provider's bit-identical one), no folding, NCHW, batch 128 (Li et
al.'s), one point per forward. The settings actually used are :attr:`SurfaceEngine.settings`
(stored in surface files).
"""


from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bn import RECALIBRATION_METHOD, recalibrate_bn
from ..directions import Directions
from ..threads import cpu_workers
from . import batching
from .audit import (
    AUDIT_SHARE,
    AUDIT_SIZE,
    TOLERANCE,
    batch_dependence,
    is_sign_sensitive,
)
from .folding import _FoldedPair, find_conv_bn_pairs, fold_batchnorm
from .points import PointEvaluation, _as_float, _one_line
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


class SurfaceEngine(PointEvaluation):
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
    statistics at every point from ``calibration`` inputs, default the train split), ``objectives`` (a
    :class:`landscape.objectives.Objectives`: the loss and metrics measured; default cross-entropy and
    top-1), ``compile``
    (``torch.compile``), ``points_per_forward`` (several points per forward via ``vmap``;
    ``"auto"`` = 4 on CUDA for the torch forward, else 1) and ``audit`` (check every fast point on
    :data:`~landscape.engine.audit.AUDIT_SIZE` images per split against the model's own forward and
    recompute the point on the reference path when it disagrees; ``False`` only to measure its cost:
    the settings then claim no tolerance).

    :attr:`counters` says what happened at the points evaluated (audited, recomputed, fallbacks);
    :attr:`settings` what ran, including every fallback taken (said once as a warning).
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
        objectives: Any = None,
        audit: bool = True,
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
        #: a landscape.objectives.Objectives (loss, top-1 and metrics as sums per split); None: cross-entropy and top-1
        self.objectives = objectives
        self._notes: list[str] = []
        self._audit_option = bool(audit)
        self._said: set[str] = set()
        self._reference_only = False
        self._workers = 1
        self._wino: list[Any] = []
        self._forward_name = "torch"
        self._audit_on = False
        #: what happened at the points evaluated so far (stored per run in surface files)
        self.counters = {"points": 0, "audited_points": 0, "audit_failed_points": 0, "fallback_points": 0,
                         "max_audit_share": 0.0}

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
        self._wino = []
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
        self.sign_sensitive = is_sign_sensitive(work)
        self.batch_dependent = batch_dependence(work, probe)
        samples = max(xs.shape[0] for xs, _ in self._data.values())
        self._ref_batch = min(samples, self.batch_size or batching.REFERENCE_BATCH)
        forward_name, check = "torch", None
        if self.batch_dependent is not None:
            self._note(f"the model depends on the batch ({self.batch_dependent}): evaluated with its own forward "
                       f"at the reference batch size {self._ref_batch}")
            self._reference_only, self.points_per_forward, self.batch_size = True, 1, self._ref_batch
        elif self.forward_factory is not None:
            forward_name = "custom"
        elif self._forward_option == "auto" and (self._ppf_auto or self.points_per_forward == 1):
            found = find_forward(work, probe, device_type=self.device.type, exact=self.exact)
            if found is not None:
                forward_name, self.forward_factory = found
                check = getattr(self.forward_factory, "probe_diff", None)
        if self.points_per_forward > 1 and (forward_name != "torch" or not self._vmap_works(probe)):
            if not self._ppf_auto:
                self._note(f"points_per_forward={self.points_per_forward} needs torch.func.vmap, which cannot run "
                           "this model: one point per forward")
            self.points_per_forward = 1  # a provider's forward, or a model vmap cannot run (custom autograd ops)
        cl = False
        if self.forward_factory is None and self.points_per_forward == 1 and not self._reference_only:
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
                samples=samples,
                device_type=self.device.type,
                exact=self.exact,
                preferred=pref,
                peak_bytes=1 if pref is not None else batching.peak_activation_bytes(work, work, probe),
            )
            if self.points_per_forward > 1:  # vmap: k points share each forward's memory
                self.batch_size = max(1, self.batch_size // self.points_per_forward)
        self._calib_chunk = None
        if self.bn_recalibrate:  # the whole calibration set in one forward unless it would not fit
            per = batching.peak_activation_bytes(work, work, self._calib)
            if per * self._calib.shape[0] > batching.MAX_ACTIVATION_BYTES:
                self._calib_chunk = batching.power_of_two_at_most(batching.MAX_ACTIVATION_BYTES // per)
        if not self.conv_algorithms and self.forward_factory is None:
            self.conv_algorithms = {n: "torch" for n, m in work.named_modules() if isinstance(m, nn.Conv2d)}
        per_split = self._conv_algorithms_per_split()
        self._forward_name = forward_name
        # a float torch forward on the CPU, or a provider whose forward may run batches side by side
        # (``concurrent_batches``, e.g. the packed engine): batches on single-threaded workers
        # (landscape.threads), which scale where one OpenMP team (or numba launch) per small op does not;
        # per batch the same arithmetic as at 1 thread
        concurrent = self.forward_factory is None or bool(getattr(self.forward_factory, "concurrent_batches", False))
        self._workers = (cpu_workers() if self.device.type == "cpu" and concurrent
                         and not self.exact and not self._reference_only and self.points_per_forward == 1 else 1)
        self._audit_on = (self._audit_option and not self.exact and not self._reference_only
                          and forward_name != "custom")
        if self._audit_on and self.sign_sensitive and self.device.type == "cpu":
            import numpy as np

            from .margins import min_abs_shift_  # compile the margin kernel now, not inside the first point

            min_abs_shift_(np.zeros((1, 1, 1), np.float32), None, np.full(1, np.inf, np.float32))
        deviation = self._precision_deviation(probe) if self.precision != "fp32" else None
        info = getattr(self.forward_factory, "info", None)
        self.settings = {
            "forward": forward_name,
            "forward_info": info() if callable(info) else None,
            "exact": self.exact,
            "batch_size": self.batch_size,
            "batch_rule": "given" if self._batch_option != "auto" else "landscape.engine.batching",
            "reference_batch_size": self._ref_batch,
            "bn_folded_pairs": self.fused_pairs,
            "channels_last": cl,
            "conv_algorithms": _merge_algorithms(per_split) if per_split else dict(self.conv_algorithms),
            "conv_algorithms_per_split": per_split,
            "winograd_fused_epilogues": self.winograd_epilogues,
            "precision": self.precision,
            "precision_deviation": deviation,
            "points_per_forward": self.points_per_forward,
            "compile": bool(self._compile),
            "fast_path_probe_diff": check,
            "sign_sensitive": self.sign_sensitive,
            "batch_dependent": self.batch_dependent,
            "bn_recalibration": {"method": RECALIBRATION_METHOD, "chunk": self._calib_chunk}
            if self.bn_recalibrate else None,
            "audit": {"images_per_split": AUDIT_SIZE, "max_share": AUDIT_SHARE, "recompute": self.precision == "fp32"}
            if self._audit_on else None,
            "fallbacks": list(self._notes),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "batch_workers": self._workers,
            # bf16 is outside the contract: its measured deviation is stored instead
            "tolerance": None if self.exact or self.precision != "fp32" or not self._audit_option
            else dict(TOLERANCE),
        }

    def _note(self, message: str, key: str | None = None) -> None:
        """Say a fallback once per ``key`` (default the message; a warning) and keep it for the settings."""
        key = key or message
        if key not in self._said:
            self._said.add(key)
            self._notes.append(message)
            warnings.warn(message, stacklevel=4)
            if self.settings:
                self.settings["fallbacks"] = list(self._notes)

    def _conv_algorithms_per_split(self) -> dict[str, dict[str, str]] | None:
        """The algorithm each Winograd-wrapped conv runs on each split's input shape (None without any)."""
        from .winograd import WinogradConv2d

        wino = [(n, m) for n, m in getattr(self._forward, "named_modules", lambda: [])()
                if isinstance(m, WinogradConv2d)]
        if not wino:
            return None
        out = {}
        with torch.inference_mode():
            for split, (xs, _) in self._data.items():
                self._forward(xs[:2])
                out[split] = {n: m.last_algorithm or "torch" for n, m in wino}
                out[split] |= {n: a for n, a in self.conv_algorithms.items() if n not in out[split]}
        return out

    def _precision_deviation(self, probe: Tensor) -> dict[str, float] | None:
        """bf16 against fp32 on the probe at the origin: relative loss and largest logit difference."""
        forward = self.forward_factory(self.work) if self.forward_factory is not None else self._forward
        with torch.inference_mode():
            ref = _as_float(self.work(probe.contiguous()))
            with self._autocast():
                got = _as_float(forward(probe))
        target = ref.argmax(1)
        lr, lg = F.cross_entropy(ref, target).item(), F.cross_entropy(got.float(), target).item()
        return {"probe_loss_rel": abs(lg - lr) / max(abs(lr), 1e-12),
                "probe_max_logit_diff": float((ref - got.float()).abs().max())}

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
        # a model that binarizes may flip a near-zero activation elsewhere: only bit-identical reorderings
        limit = 0.0 if self.sign_sensitive else PROBE_RTOL * scale
        if not diff <= limit:
            if self.sign_sensitive and (pairs or cl):
                self._note("BatchNorm folding / channels-last are not bit-identical on this binary model "
                           f"(probe difference {diff:.3g}): running the model as it is")
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
            try:
                diff = self._setup_winograd(fused, xp if cl else probe, ref, scale, diff)
            except Exception as exc:  # noqa: BLE001 - a pattern the Winograd wrapper cannot run
                self._forward, self.conv_algorithms, self.winograd_epilogues = fused, {}, 0
                self._note(f"Winograd convolutions could not run this model ({_one_line(exc)}): using torch convs")
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
        limit = 0.0 if self.sign_sensitive else WINOGRAD_PROBE_RTOL * scale
        if not wdiff <= limit or WINOGRAD not in algos.values():
            self.winograd_epilogues = 0
            if self.sign_sensitive and WINOGRAD in algos.values():
                self._note(f"Winograd convolutions are not bit-identical on this binary model (probe difference "
                           f"{wdiff:.3g}): using torch convs")
            if self._winograd_explicit:
                warnings.warn(f"Winograd convolutions changed the outputs by {wdiff:.3g}; not using them",
                              stacklevel=5)
            return diff
        self._forward = forward
        self._wino = [m for m in wmodel.modules() if isinstance(m, WinogradConv2d)]
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
            "_wino",
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
            for conv in self._wino:  # transformed here, once, not by the first of several batch workers
                conv.transformed_weights()

    def _recalibrate(self) -> None:
        """BN statistics of the current point: the calibration set's population statistics, computed by the
        model's own forward (:func:`landscape.bn.recalibrate_bn`), whatever the engine and batch size."""
        recalibrate_bn(self.work, self._calib, self._calib_chunk, self._bns)


def _merge_algorithms(per_split: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """One algorithm per conv when every split runs the same, else ``"<algo> (<split>), ..."``."""
    names = dict.fromkeys(n for algos in per_split.values() for n in algos)
    out = {}
    for n in names:
        used = {s: a.get(n, "torch") for s, a in per_split.items()}
        out[n] = next(iter(used.values())) if len(set(used.values())) == 1 else ", ".join(
            f"{a} ({s})" for s, a in used.items())
    return out
