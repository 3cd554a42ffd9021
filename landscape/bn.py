"""BatchNorm statistics away from a trained model: recalibrate at every point, or interpolate safely.

A network's BatchNorm running statistics belong to its weights. Along a line between two models
(or on a plane through three) the weights at a point are no trained model's, so neither model's
statistics fit them. Two policies (``bn=`` of :func:`landscape.surface.compute_surface`, CLI
``--bn``):

* ``recalibrate`` (the default for ``interpolate`` and ``plane`` directions, the usual practice for
  interpolation and mode-connectivity curves): at every grid point each BN layer gets the exact
  population mean and variance of its input over a fixed calibration set (by default a seeded subset
  of the training data), accumulated in float64 (:func:`recalibrate_bn`), so the statistics do not
  depend on the evaluation batch size, the engine or the device; the method and the set's size,
  seed and SHA-256 are stored with the surface, and a resume with another calibration is refused.
* ``interpolate``: the running statistics move with the directions (``theta + x*dx`` for
  interpolation directions, which include floating buffers; unchanged for random, PCA and
  file directions, which move parameters only). Beyond the end points a linear extrapolation of
  a running *variance* can turn negative, which makes the loss NaN: such a grid is refused before
  any work, naming the points and the coordinate range where the interpolated statistics are
  valid (see :func:`check_interpolated_variance`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .directions import Directions

BN_MODES = ("recalibrate", "interpolate")


def default_bn_mode(kind: str) -> str:
    """``recalibrate`` for directions between models (``interpolate``, ``plane``), else ``interpolate``."""
    return "recalibrate" if kind in ("interpolate", "plane") else "interpolate"


def resolve_bn_mode(bn: str | None, kind: str, bn_recalibrate: bool | None = None) -> str:
    """The BN policy from ``bn`` (or the legacy ``bn_recalibrate`` flag), defaulting by direction kind."""
    if bn is not None and bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    if bn_recalibrate is not None:
        legacy = "recalibrate" if bn_recalibrate else None
        if bn is not None and legacy is not None and bn != legacy:
            raise ValueError(f"bn={bn!r} contradicts bn_recalibrate=True; pass only bn")
        bn = bn or legacy
    return bn or default_bn_mode(kind)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that tracks running statistics."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules()
    )


#: how :func:`recalibrate_bn` estimates the statistics (stored in the surface settings' ``bn_calibration``)
RECALIBRATION_METHOD = "population-float64"
#: samples per float64 moment group (fixed, aligned to the calibration set: any chunk size that is a
#: multiple of it combines the same groups in the same order)
_GROUP = 64


class _Stop(Exception):
    """Ends a calibration forward once the layer being measured has seen its input."""


def _group_moments(x: Tensor, start: int) -> list[tuple[int, int, Tensor, Tensor]]:
    """Per-channel ``(group, count, mean, M2)`` in float64 of ``x`` (rows ``start...`` of the calibration
    set), over every dimension but 1, in groups of :data:`_GROUP` rows aligned to the whole set."""
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    out, s = [], 0
    while s < x.shape[0]:
        g = (start + s) // _GROUP
        e = min(x.shape[0], (g + 1) * _GROUP - start)
        xc = x[s:e].detach().double()
        mean = xc.mean(dims)
        m2 = ((xc - mean.view(shape)) ** 2).sum(dims)
        out.append((g, xc.numel() // xc.shape[1], mean, m2))
        s = e
    return out


class _Moments:
    """Chan et al.'s pairwise combination of per-group ``(count, mean, M2)`` (numerically stable)."""

    def __init__(self) -> None:
        self.parts: dict[int, list[tuple[int, Tensor, Tensor]]] = {}

    def add(self, x: Tensor, start: int) -> None:
        for g, n, mean, m2 in _group_moments(x, start):
            self.parts.setdefault(g, []).append((n, mean, m2))

    def result(self) -> tuple[Tensor, Tensor]:
        n, mean, m2 = 0, None, None
        for g in sorted(self.parts):
            for nb, mb, qb in self.parts[g]:
                if mean is None:
                    n, mean, m2 = nb, mb, qb
                    continue
                tot = n + nb
                delta = mb - mean
                mean = mean + delta * (nb / tot)
                m2 = m2 + qb + delta * delta * (n * nb / tot)
                n = tot
        assert mean is not None and m2 is not None
        return mean, m2 / n


def recalibrate_bn(
    model: nn.Module, inputs: Tensor, batch_size: int | None = None, bns: Sequence[nn.Module] | None = None
) -> None:
    """Set BN running statistics to the exact population statistics of ``inputs`` at the current weights.

    Each BN layer (``bns``, default all that track statistics) gets the per-channel mean and the
    *population* (biased, divide by count) variance of its input over the whole calibration set,
    accumulated in float64, with every BN before it already holding its own population statistics.
    That is the eval-mode model that a train-mode forward of the whole set as one batch describes
    (BN normalizes with the biased batch variance in train mode; PyTorch's ``running_var`` would
    store the unbiased one, which with ``momentum=None`` averages per-batch estimates and so depends
    on how the set is cut). The result does not depend on ``batch_size``, which only bounds memory:
    ``None`` (or at least the set's size) runs one forward over the whole set; a smaller chunk size
    runs one pass per BN layer, each stopped right after that layer. A BN module called several
    times per forward keeps the statistics of its first call. Layers keep their train/eval mode,
    except the BN layers, which end in eval mode (their ``momentum`` is untouched).
    """
    if bns is None:
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    bns = list(bns)
    if not bns:
        return
    n = int(inputs.shape[0])
    if n == 0:
        raise ValueError("recalibrate_bn: the calibration set is empty; expected at least one input")
    chunk = n if batch_size is None or batch_size >= n else int(batch_size)
    if chunk < 1:
        raise ValueError(f"recalibrate_bn: batch_size must be a positive integer or None, got {batch_size!r}")
    index = {id(m): k for k, m in enumerate(bns)}
    final = [False] * len(bns)
    state: dict[str, Any] = {"target": None, "start": 0, "moments": None}

    def finish(k: int, moments: _Moments) -> None:
        mean, var = moments.result()
        bn = bns[k]
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.fill_(1)
        final[k] = True

    def pre_hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
        k = index[id(mod)]
        if final[k]:
            return
        if chunk == n:  # the whole set in this forward: measure, set, go on
            mom = _Moments()
            mom.add(args[0], 0)
            finish(k, mom)
            return
        if state["target"] is None:
            state["target"], state["moments"] = k, _Moments()
        state["moments"].add(args[0], state["start"])
        raise _Stop

    for m in bns:
        m.reset_running_stats()
        m.eval()
    handles = [m.register_forward_pre_hook(pre_hook) for m in bns]
    try:
        with torch.no_grad():
            while not all(final):
                state["target"] = None
                for s in range(0, n, chunk):
                    state["start"] = s
                    try:
                        model(inputs[s : s + chunk])
                    except _Stop:
                        pass
                if chunk == n or state["target"] is None:
                    break  # one forward did everything, or the remaining layers are never called
                finish(state["target"], state["moments"])
    finally:
        for h in handles:
            h.remove()


def tensor_sha256(*tensors: Tensor) -> str:
    """SHA-256 of tensors' shapes and bytes (identifies an evaluation or calibration set)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def calibration_record(calibration: Tensor, seed: int | None = None, source: str | None = None) -> dict[str, Any]:
    """What identifies a calibration in the surface settings: the method, the set's size, seed, SHA-256, source."""
    return {
        "method": RECALIBRATION_METHOD,
        "size": int(calibration.shape[0]),
        "seed": seed,
        "sha256": tensor_sha256(calibration),
        "source": source,
    }


def seeded_subset(inputs: Tensor, size: int, seed: int) -> Tensor:
    """``size`` rows of ``inputs`` chosen by a seeded permutation (kept in their original order)."""
    if size <= 0 or size >= inputs.shape[0]:
        return inputs
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(inputs.shape[0], generator=gen)[:size].sort().values
    return inputs[idx].contiguous()


def _moved_variances(model: nn.Module, directions: Directions) -> list[tuple[str, np.ndarray, dict]]:
    buffers = dict(model.named_buffers())
    out = []
    for name in directions.names:
        if not name.endswith("running_var") or name not in buffers:
            continue
        axes = {a: d[name].detach().double().cpu().numpy().reshape(-1) for a, d in directions.axes().items()}
        if not any(v.any() for v in axes.values()):
            continue
        out.append((name, buffers[name].detach().double().cpu().numpy().reshape(-1), axes))
    return out


def check_interpolated_variance(
    model: nn.Module, directions: Directions, xcoordinates: np.ndarray, ycoordinates: np.ndarray | None
) -> None:
    """Refuse grids where a moved BN running variance ``var + x*dvar (+ y*dvar_y)`` turns negative.

    Raises ``ValueError`` naming the number of such points, an example point and buffer, and (1D)
    the range of x where every interpolated variance stays >= 0.
    """
    moved = _moved_variances(model, directions)
    if not moved:
        return
    xc = np.asarray(xcoordinates, dtype=np.float64)
    yc = np.zeros(1) if ycoordinates is None else np.asarray(ycoordinates, dtype=np.float64)
    gx, gy = np.meshgrid(xc, yc, indexing="ij")
    px, py = gx.reshape(-1), gy.reshape(-1)
    worst = np.full(px.shape, np.inf)
    culprit = [""] * px.size
    lo, hi = -np.inf, np.inf
    for name, var, axes in moved:
        dx, dy = axes["x"], axes.get("y", np.zeros_like(var))
        for s in range(0, px.size, 256):
            vals = var[None] + px[s : s + 256, None] * dx[None] + py[s : s + 256, None] * dy[None]
            mins = vals.min(axis=1)
            for k in np.nonzero(mins < worst[s : s + 256])[0]:
                culprit[s + k] = name
            worst[s : s + 256] = np.minimum(worst[s : s + 256], mins)
        if ycoordinates is None:
            pos, neg = dx > 0, dx < 0
            if pos.any():
                lo = max(lo, float((-var[pos] / dx[pos]).max()))
            if neg.any():
                hi = min(hi, float((-var[neg] / dx[neg]).min()))
    bad = np.nonzero(worst < 0)[0]
    if not bad.size:
        return
    k = int(bad[0])
    where = f"x={px[k]:g}" if ycoordinates is None else f"(x={px[k]:g}, y={py[k]:g})"
    valid = f"; the interpolated statistics are valid for x in [{lo:.4g}, {hi:.4g}]" if ycoordinates is None else ""
    raise ValueError(
        f"bn='interpolate': BatchNorm running variances turn negative at {bad.size} of {px.size} grid "
        f"points (e.g. {where}: {culprit[k]} reaches {worst[k]:.3g}), which would make the loss NaN{valid}. "
        "Use bn='recalibrate' (CLI --bn recalibrate, the default for interpolation and planes) to "
        "re-estimate the statistics at every point, or a grid inside that range."
    )


def nonfinite_message(index: Sequence[int], x: float, y: float | None, values: dict[str, float]) -> str | None:
    """A warning naming a grid point whose computed values are not all finite (None when all are)."""
    bad = {k: v for k, v in values.items() if not np.isfinite(v)}
    if not bad:
        return None
    where = f"x={x:g}" if y is None else f"x={x:g}, y={y:g}"
    vals = ", ".join(f"{k}={v}" for k, v in bad.items())
    return f"grid point {tuple(index)} ({where}): non-finite {vals}"
