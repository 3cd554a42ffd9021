"""BatchNorm statistics away from a trained model: recalibrate at every point, or interpolate safely.

A network's BatchNorm running statistics belong to its weights. Along a line between two models
(or on a plane through three) the weights at a point are no trained model's, so neither model's
statistics fit them. Two policies (``bn=`` of :func:`landscape.surface.compute_surface`, CLI
``--bn``):

* ``recalibrate`` (the default for ``interpolate`` and ``plane`` directions, the usual practice for
  interpolation and mode-connectivity curves): at every grid point the statistics are re-estimated
  by a forward pass in train mode (cumulative average) over a fixed calibration set, by default a
  seeded subset of the training data; its size, seed and SHA-256 are stored with the surface.
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


def recalibrate_bn(
    model: nn.Module, inputs: Tensor, batch_size: int = 128, bns: Sequence[nn.Module] | None = None
) -> None:
    """Re-estimate BN running statistics from ``inputs``: the BN layers (``bns``, default all that track
    statistics) in train mode with a cumulative average (``momentum=None``), one pass in batches of
    ``batch_size``, then back to eval mode with their momentum restored. Other layers keep their mode."""
    if bns is None:
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    moms = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        with torch.no_grad():
            for s in range(0, inputs.shape[0], batch_size):
                model(inputs[s : s + batch_size])
    finally:
        for m, mom in zip(bns, moms):
            m.momentum = mom
            m.eval()


def tensor_sha256(*tensors: Tensor) -> str:
    """SHA-256 of tensors' shapes and bytes (identifies an evaluation or calibration set)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def calibration_record(calibration: Tensor, seed: int | None = None, source: str | None = None) -> dict[str, Any]:
    """What identifies a calibration set in the surface settings: size, seed, SHA-256, source."""
    return {
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
