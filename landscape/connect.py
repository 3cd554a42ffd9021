"""Mode connectivity: a low-loss curve between two trained models, against the straight line.

Garipov et al. 2018 ("Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs"): the
parameters along a curve ``theta(t)``, ``t in [0, 1]``, ``theta(0) = A``, ``theta(1) = B``, are

* ``bezier`` with ``n`` bends: ``theta(t) = sum_k C(n+1, k) t^k (1-t)^(n+1-k) P_k`` over the control
  points ``P = (A, bend_1..bend_n, B)``;
* ``polychain`` with ``n`` bends: straight segments through ``P``, bend ``k`` at ``t = k / (n+1)``.

The bends start on the straight line and are trained by minimizing the expected loss along the
curve, ``E_{t~U(0,1)} L(theta(t))``: each step draws one ``t`` and a minibatch (BatchNorm in train
mode, batch statistics; Garipov et al. Sec. 3.2). For evaluation, BatchNorm statistics are
re-estimated at every point (:func:`landscape.bn.recalibrate_bn` on a fixed calibration set), since
neither end point's statistics belong to the weights in between (Garipov et al. Sec. 3.3).

The barrier of a path is ``max_t L(t) - (L(0) + L(1)) / 2`` (Frankle et al. 2020; Draxler et al.
2018 call its maximum the saddle). Each path is a 1D surface file (``xcoordinates`` = ``t``; the
``directions/x`` group holds ``B - A``; a curve's bend points are in the group ``curve``), the
barriers are stored as ``metrics/barrier`` with a bootstrap interval over the evaluation samples.

Binary networks: the curve lives in the *latent* (real-valued) weights; what the network computes
is their signs. The CLI says so and also evaluates both paths with the packed 1-bit engine.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bn import calibration_record, has_batchnorm, recalibrate_bn, tensor_sha256
from .store import SurfaceWriter, package_version, read_surface, write_arrays, write_metrics

__all__ = ["CURVES", "Curve", "ConnectResult", "barrier", "connect", "evaluate_path", "fit_curve", "measure"]

CURVES = ("bezier", "polychain")
ForwardFactory = Callable[[nn.Module], Callable[[Tensor], Tensor]]


@dataclass
class Curve:
    """A path ``theta(t)`` through control points ``(start, *bends, end)`` (dicts name -> tensor)."""

    kind: str  # "bezier", "polychain" or "line"
    start: dict[str, Tensor]
    end: dict[str, Tensor]
    bends: list[dict[str, Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in (*CURVES, "line"):
            raise ValueError(f"curve kind must be one of {(*CURVES, 'line')}, got {self.kind!r}")
        if self.kind == "line" and self.bends:
            raise ValueError("a line has no bends")

    @classmethod
    def initial(cls, kind: str, start: Mapping[str, Tensor], end: Mapping[str, Tensor], bends: int) -> Curve:
        """Bends placed on the straight line at ``t = k/(n+1)`` (for a Bezier curve with one bend the
        initial curve *is* the line, uniformly parameterized)."""
        if kind not in CURVES:
            raise ValueError(f"curve must be one of {CURVES}, got {kind!r}")
        if bends < 1:
            raise ValueError(f"a {kind} curve needs at least 1 bend, got {bends}")
        s = {k: v.detach().float().clone() for k, v in start.items()}
        e = {k: v.detach().float().clone() for k, v in end.items()}
        mids = [{k: s[k] + (e[k] - s[k]) * (j / (bends + 1)) for k in s} for j in range(1, bends + 1)]
        return cls(kind, s, e, mids)

    @property
    def names(self) -> list[str]:
        return list(self.start)

    def control_points(self) -> list[dict[str, Tensor]]:
        return [self.start, *self.bends, self.end]

    def coefficients(self, t: float) -> list[float]:
        """Weights of the control points at ``t`` (they sum to 1)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}")
        n = len(self.bends) + 1  # number of segments / Bezier degree
        if self.kind == "bezier":
            return [math.comb(n, k) * t**k * (1 - t) ** (n - k) for k in range(n + 1)]
        seg = min(int(t * n), n - 1)  # line and polychain: piecewise linear, knots at k/n
        u = t * n - seg
        c = [0.0] * (n + 1)
        c[seg], c[seg + 1] = 1.0 - u, u
        return c

    def point(self, t: float) -> dict[str, Tensor]:
        """``theta(t)``; differentiable in the bends when they require grad."""
        out: dict[str, Tensor] = {}
        for c, p in zip(self.coefficients(t), self.control_points(), strict=True):
            if c == 0.0:
                continue
            for k, v in p.items():
                out[k] = out[k] + c * v if k in out else c * v
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The bend points as ``bend_<k>/<name>`` arrays (for the surface file)."""
        return {f"bend_{j}/{k}": v.detach().cpu().numpy() for j, b in enumerate(self.bends, 1) for k, v in b.items()}

    def sha256(self) -> str:
        return tensor_sha256(*[b[k] for b in self.bends for k in sorted(b)]) if self.bends else "none"


def curve_parameters(model: nn.Module, start: Mapping[str, Tensor], end: Mapping[str, Tensor]
                     ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The floating-point parameters of ``model`` taken from two state dicts (checked to match it)."""
    names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
    for label, state in (("A", start), ("B", end)):
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"model {label} lacks parameter(s) {missing[:3]}; expected two checkpoints of one "
                             "architecture")
    params = dict(model.named_parameters())
    for n in names:
        if start[n].shape != end[n].shape or start[n].shape != params[n].shape:
            raise ValueError(f"parameter {n!r} has shape {tuple(start[n].shape)} in A and {tuple(end[n].shape)} "
                             f"in B, expected {tuple(params[n].shape)}")
    return {n: start[n] for n in names}, {n: end[n] for n in names}


def _bar(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="pt" if "eval" in desc else "step",
                disable=not enabled, leave=False)


def fit_curve(
    model: nn.Module,
    curve: Curve,
    inputs: Tensor,
    targets: Tensor,
    *,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    state_path: str | os.PathLike[str] | None = None,
    save_every: int = 50,
    progress: bool = True,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> Curve:
    """Train the bends of ``curve`` (in place, and returned) on ``E_t L(theta(t))`` with Adam.

    Each step draws ``t ~ U(0, 1)`` and a minibatch from a generator seeded by ``seed``; the model's
    buffers are copied (BatchNorm in train mode updates the copies only). With ``state_path`` the
    bends, optimizer and generator are saved every ``save_every`` steps (atomically) and a run
    with the same settings resumes from there. ``model`` is left unchanged.
    """
    if not curve.bends:
        raise ValueError("the curve has no bends to fit")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    bends = [{k: nn.Parameter(v.detach().clone()) for k, v in b.items()} for b in curve.bends]
    curve.bends = bends  # type: ignore[assignment]
    opt = torch.optim.Adam([p for b in bends for p in b.values()], lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    # ``steps`` is not compared: a longer run continues a shorter one
    settings = {"kind": curve.kind, "bends": len(bends), "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "seed": seed, "data_sha256": tensor_sha256(inputs, targets)}
    step = 0
    if state_path is not None and Path(state_path).exists():
        state = torch.load(state_path, weights_only=True)
        if state.get("settings") == settings and int(state["step"]) <= steps:
            with torch.no_grad():
                for b, saved in zip(bends, state["bends"], strict=True):
                    for k, v in b.items():
                        v.copy_(saved[k])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            step = int(state["step"])
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    n = inputs.shape[0]
    bar = _bar(steps, f"fit {curve.kind}", progress, initial=step)
    try:
        while step < steps:
            t = float(torch.rand((), generator=gen))
            idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
            out = torch.func.functional_call(model, {**curve.point(t), **buffers}, (inputs[idx],))
            loss = loss_fn(out, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if state_path is not None and (step % save_every == 0 or step == steps):
                _save_state(state_path, settings, bends, opt, gen, step)
    finally:
        bar.close()
        model.train(was_training)
    curve.bends = [{k: v.detach() for k, v in b.items()} for b in bends]
    return curve


def _save_state(path: str | os.PathLike[str], settings: dict, bends: list, opt: Any, gen: Any, step: int) -> None:
    from .lock import remove_stale_temporaries

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {"settings": settings, "step": step, "generator": gen.get_state(),
             "bends": [{k: v.detach().clone() for k, v in b.items()} for b in bends], "optimizer": opt.state_dict()}
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def measure(forward: Callable[[Tensor], Tensor], data: Mapping[str, tuple[Tensor, Tensor]], batch_size: int = 256
            ) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Mean cross-entropy and top-1 (percent) per split, and the per-sample losses (float64)."""
    values: dict[str, float] = {}
    per_sample: dict[str, Tensor] = {}
    with torch.inference_mode():
        for split, (xs, ys) in data.items():
            losses, correct = [], 0
            for s in range(0, xs.shape[0], batch_size):
                logits = forward(xs[s : s + batch_size]).float()
                yb = ys[s : s + batch_size]
                losses.append(F.cross_entropy(logits, yb, reduction="none").double())
                correct += int((logits.argmax(dim=1) == yb).sum())
            per_sample[split] = torch.cat(losses)
            values[f"{split}_loss"] = float(per_sample[split].mean())
            values[f"{split}_acc"] = 100.0 * correct / xs.shape[0]
    return values, per_sample


class _PathEvaluator:
    """A working copy of the model whose parameters are set to ``theta(t)`` (BN recalibrated)."""

    def __init__(self, model: nn.Module, calibration: Tensor | None, forward_factory: ForwardFactory | None,
                 batch_size: int) -> None:
        self.work = copy.deepcopy(model).eval()
        self.params = dict(self.work.named_parameters())
        self.calibration = calibration if calibration is not None and has_batchnorm(self.work) else None
        self.forward_factory = forward_factory
        self.batch_size = batch_size

    def __call__(self, curve: Curve, t: float, data: Mapping[str, tuple[Tensor, Tensor]]
                 ) -> tuple[dict[str, float], dict[str, Tensor]]:
        with torch.no_grad():
            for k, v in curve.point(t).items():
                self.params[k].copy_(v)
        if self.calibration is not None:
            recalibrate_bn(self.work, self.calibration)
        self.work.eval()
        forward = self.forward_factory(self.work) if self.forward_factory is not None else self.work
        return measure(forward, data, self.batch_size)


def barrier(losses: Sequence[float] | np.ndarray) -> float:
    """``max(L) - (L[0] + L[-1]) / 2`` along a path sampled from ``t = 0`` to ``t = 1``."""
    v = np.asarray(losses, dtype=np.float64)
    if v.size < 2 or not np.isfinite(v).all():
        raise ValueError(f"a barrier needs >= 2 finite losses along the path, got {v.size} "
                         f"({int((~np.isfinite(v)).sum())} non-finite)")
    return float(v.max() - 0.5 * (v[0] + v[-1]))


def _bootstrap(per_point: list[Tensor], resamples: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``L_max - (L_0 + L_1)/2`` under paired resampling of the samples."""
    gen = torch.Generator().manual_seed(seed)
    n = per_point[0].numel()
    idx = torch.randint(0, n, (resamples, n), generator=gen)
    lmax, l0, l1 = (p[idx].mean(dim=1) for p in per_point)
    b = (lmax - 0.5 * (l0 + l1)).numpy()
    a = (1 - confidence) / 2
    return float(np.quantile(b, a)), float(np.quantile(b, 1 - a))


def evaluate_path(
    path: str | os.PathLike[str],
    model: nn.Module,
    curve: Curve,
    data: Mapping[str, tuple[Tensor, Tensor]],
    ts: np.ndarray,
    *,
    settings: Mapping[str, Any],
    calibration: Tensor | None = None,
    forward_factory: ForwardFactory | None = None,
    batch_size: int = 256,
    mode: str = "resume",
    progress: bool = True,
    resamples: int = 1000,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate ``curve`` at ``ts`` into the 1D surface file ``path`` (resumable), then store its barriers
    (``metrics/barrier``: per split, loss barrier, accuracy drop, bootstrap CI). Returns the file written
    (``<stem>-N.h5`` with ``mode="new"``) and the barriers."""
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2 or ts[0] != 0.0 or ts[-1] != 1.0 or np.any(np.diff(ts) <= 0):
        raise ValueError("the path's points must increase from t=0 to t=1 (at least 2)")
    chord = {k: (curve.end[k] - curve.start[k]).detach().cpu().numpy() for k in curve.names}
    info = {"kind": "connect", "path": curve.kind, "bends": len(curve.bends),
            "parameterization": "x is t in [0, 1]; theta(0) = A, theta(1) = B; directions/x holds B - A"}
    evaluator = _PathEvaluator(model, calibration, forward_factory, batch_size)
    with SurfaceWriter.open(path, settings=settings, xcoordinates=ts, ycoordinates=None,
                            directions={"x": chord}, direction_info=info, mode=mode) as writer:
        out = writer.path
        pending = sorted(writer.pending())
        bar = _bar(len(pending), f"eval {curve.kind}", progress)
        samples: dict[float, dict[str, Tensor]] = {}  # per-sample losses of this run's points (for the bootstrap)
        try:
            for idx in pending:
                values, samples[float(ts[idx[0]])] = evaluator(curve, float(ts[idx[0]]), data)
                writer.write([(idx, values)])
                bar.update(1)
        finally:
            bar.close()
    if curve.bends:
        write_arrays(out, "curve", curve.arrays(), {"kind": curve.kind, "bends": len(curve.bends),
                                                    "sha256": curve.sha256()})
    surface = read_surface(out)

    def per_sample(t: float) -> dict[str, Tensor]:
        if t not in samples:  # a point stored by an earlier run: evaluated again
            samples[t] = evaluator(curve, t, data)[1]
        return samples[t]

    metrics: dict[str, Any] = {"path": curve.kind, "points": int(ts.size)}
    for split in data:
        loss, acc = surface.values[f"{split}_loss"], surface.values[f"{split}_acc"]
        tk = float(ts[int(np.nanargmax(loss))])
        lo, hi = _bootstrap([per_sample(t)[split] for t in (tk, 0.0, 1.0)], resamples, seed=0)
        metrics.update({
            f"{split}_loss_barrier": barrier(loss), f"{split}_loss_barrier_ci95": [lo, hi],
            f"{split}_barrier_t": tk,
            f"{split}_acc_drop": float(0.5 * (acc[0] + acc[-1]) - np.nanmin(acc)),
            f"{split}_end_loss": [float(loss[0]), float(loss[-1])],
        })
    metrics["ci"] = (f"95% percentile bootstrap over the {resamples} resamples of the evaluation samples "
                     "(paired across t=0, t=1 and the maximum); excludes the t-grid resolution")
    write_metrics(out, "barrier", metrics)
    return out, metrics


@dataclass
class ConnectResult:
    """What :func:`connect` wrote: the curve and line files, their barriers, the fitted curve."""

    curve_path: Path
    line_path: Path
    curve_metrics: dict[str, Any]
    line_metrics: dict[str, Any]
    curve: Curve


def connect(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    fit_data: tuple[Tensor, Tensor],
    data: Mapping[str, tuple[Tensor, Tensor]],
    *,
    kind: str = "bezier",
    bends: int = 1,
    points: int = 21,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    calibration: Tensor | None = None,
    calibration_seed: int | None = None,
    forward_factory: ForwardFactory | None = None,
    evaluator_name: str = "torch",
    metadata: Mapping[str, Any] | None = None,
    mode: str = "resume",
    progress: bool = True,
    stem: str | None = None,
) -> ConnectResult:
    """Fit a ``kind`` curve with ``bends`` bends between models A and B (state dicts of ``model``'s
    architecture) on ``fit_data``, and evaluate it and the straight line at ``points`` values of t
    on ``data`` into ``<out_dir>/<stem>_curve.h5`` and ``<stem>_line.h5`` (resumable; the fit state
    is ``<stem>_fit.pt``). BatchNorm statistics are recalibrated on ``calibration`` at every point
    when given (recommended). ``forward_factory`` evaluates with another forward (``evaluator_name``
    is stored, e.g. ``packed``)."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    out_dir = Path(out_dir)
    stem = stem or f"connect_{kind}{bends}"
    start, end = curve_parameters(model, state_a, state_b)
    curve = Curve.initial(kind, start, end, bends)
    xs, ys = fit_data
    fit_curve(model, curve, xs, ys, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
              state_path=out_dir / f"{stem}_fit.pt", progress=progress)
    # floating buffers of A (BN statistics are recalibrated per point when a calibration set is given)
    base = copy.deepcopy(model)
    base.load_state_dict(dict(state_a), strict=False)
    ts = np.linspace(0.0, 1.0, points)
    common = {**dict(metadata or {}), "package_version": package_version(), "evaluated_by": evaluator_name,
              "bn": "recalibrate" if calibration is not None and has_batchnorm(model) else "model A's statistics",
              "bn_calibration": None if calibration is None else calibration_record(calibration, calibration_seed),
              "data_sha256": {s: tensor_sha256(*v) for s, v in data.items()}}
    fit = {"kind": kind, "bends": bends, "steps": steps, "batch_size": batch_size, "lr": lr,
           "weight_decay": weight_decay, "seed": seed, "fit_data_sha256": tensor_sha256(xs, ys),
           "curve_sha256": curve.sha256()}
    suffix = "" if evaluator_name == "torch" else f"_{evaluator_name}"
    kw = {"calibration": calibration, "forward_factory": forward_factory, "mode": mode, "progress": progress}
    line = Curve("line", curve.start, curve.end)
    curve_path, cm = evaluate_path(out_dir / f"{stem}_curve{suffix}.h5", base, curve, data, ts,
                                   settings={**common, "path": kind, "fit": fit}, **kw)
    line_path, lm = evaluate_path(out_dir / f"{stem}_line{suffix}.h5", base, line, data, ts,
                                  settings={**common, "path": "line"}, **kw)
    return ConnectResult(curve_path, line_path, cm, lm, curve)
