"""Grid specs, the evaluation engine, and resumable (optionally distributed) surface computation.

Every grid point is evaluated as exactly ``loss(theta + x*dx + y*dy)`` (mean cross-entropy) and
top-1 accuracy (percent) on fixed tensors, model in eval mode (Li et al. 2018, Sec. 4-5). The
reference tool spends ~99% of its time in forward passes, so the engine makes the forward cheaper:

* the evaluation subset is held as tensors on the device once; ``torch.inference_mode``;
* weights are set in place from flat float32 buffers (``theta0``, ``dx``, ``dy``): the perturbed
  parameters are views into one buffer holding ``theta0 + (x*dx + y*dy)`` (rounded like the
  reference tool's ``w + (d0*x + d1*y)``), a few elementwise ops per point, no copies of the model;
* the defaults are the fast path (see :mod:`landscape.engine` for the options and the tolerance
  contract): a registered forward provider (the packed XNOR engine of ``bnext.packed`` for binary
  networks), otherwise BatchNorm folded into plain convs and channels-last inputs on the CPU (each
  checked against the model on a probe batch), a deterministic batch size
  (:mod:`landscape.engine.batching`), several points per forward (``vmap``) on CUDA; ``exact=True`` is
  bit-identical to the model's own forward. The settings used are stored as the ``engine`` attribute.

The user's model is left exactly as it was: original parameter tensors are re-attached (bitwise
unchanged), buffers copied back, ``requires_grad`` and train/eval flags restored.

Under ``torch.distributed`` (``torchrun``; gloo on CPU, nccl on CUDA) :func:`compute_surface`
shards the pending points across ranks; rank 0 gathers each round and is the only writer.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .bn import (
    calibration_record,
    check_interpolated_variance,
    has_batchnorm,
    nonfinite_message,
    resolve_bn_mode,
    tensor_sha256,
)
from .directions import Directions
from .engine import EvalData, SurfaceEngine
from .grid import coarse_to_fine, grid_points, parse_grid
from .objectives import make_objectives
from .store import SurfaceWriter, package_version

__all__ = ["compute_surface", "evaluate_grid", "fit_trajectory_grid", "resolve_grid", "surface_settings",
           "tensor_sha256"]


# ----------------------------------------------------------------------------- grids
def _coords(index: tuple[int, ...], xc: np.ndarray, yc: np.ndarray | None) -> tuple[float, float]:
    return float(xc[index[0]]), float(yc[index[1]]) if yc is not None else 0.0


#: the bar until the first point is done (tqdm's default format after it)
FIRST_POINT_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, first point: set-up and compiling]"


def _first_done(bar: Any) -> None:
    """Switch ``bar`` to tqdm's usual format (rate and ETA) once its first point is done."""
    if getattr(bar, "bar_format", None) == FIRST_POINT_FORMAT:  # a disabled bar has none
        bar.bar_format = None
        # the rate and ETA come from the points after the first (set-up and compiles are not a rate)
        bar.start_t = bar.last_print_t = bar._time()
        bar.initial = bar.last_print_n = bar.n


def evaluate_grid(
    model: nn.Module,
    directions: Directions,
    data: EvalData,
    xcoordinates: np.ndarray | str,
    ycoordinates: np.ndarray | str | None = None,
    *,
    bn: str | None = None,
    progress: bool = False,
    loss: Any = "ce",
    metrics: Sequence[Any] | None = None,
    **engine_options: Any,
) -> dict[str, np.ndarray]:
    """Evaluate a whole grid in memory; returns ``{'<split>_loss': array, ...}`` of shape (nx[, ny]).

    ``bn``, ``loss``, ``metrics`` and grid specs as in :func:`compute_surface`.
    """
    xc = resolve_grid(xcoordinates, directions, "x")
    yc = resolve_grid(ycoordinates, directions, "y")
    _check_dims(directions, yc)
    engine_options = dict(engine_options)
    _bn_options(model, directions, data, xc, yc, bn, engine_options, None)
    objectives = make_objectives(loss, metrics)
    if not objectives.is_default:
        engine_options["objectives"] = objectives
    shape = (len(xc),) if yc is None else (len(xc), len(yc))
    out = {name: np.full(shape, np.nan) for name in objectives.value_names(data)}
    points = grid_points(xc, yc)
    from tqdm.auto import tqdm

    with SurfaceEngine(model, directions, data, **engine_options) as engine:
        k = engine.points_per_forward
        bar = tqdm(total=len(points), disable=not progress, desc="landscape", unit="pt")
        for s in range(0, len(points), k):
            chunk = points[s : s + k]
            for idx, vals in zip(chunk, engine.evaluate_many([_coords(i, xc, yc) for i in chunk])):
                _warn_nonfinite(idx, xc, yc, vals)
                for name, v in vals.items():
                    out[name][idx] = v
            bar.update(len(chunk))
        bar.close()
    return out


def _warn_nonfinite(idx: tuple[int, ...], xc: np.ndarray, yc: np.ndarray | None, vals: Mapping[str, float]) -> bool:
    msg = nonfinite_message(idx, float(xc[idx[0]]), None if yc is None else float(yc[idx[1]]), dict(vals))
    if msg:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return msg is not None


def _check_dims(directions: Directions, yc: np.ndarray | None) -> None:
    if yc is None and directions.ndim == 2:
        raise ValueError("2D directions need y coordinates (or pass 1D directions for a 1D surface)")
    if yc is not None and directions.ndim == 1:
        raise ValueError(f"y coordinates given but the {directions.kind!r} directions have no y direction")


def fit_trajectory_grid(
    trajectory: np.ndarray, num: int = 21, margin: float = 0.2, square: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates covering a projected trajectory (and the origin) with a margin.

    Each axis spans ``[min, max]`` of the trajectory's coordinates and 0, widened by ``margin``
    times that span on both sides (Li et al.'s PCA plots frame the whole path the same way). With
    ``square`` the shorter axis is widened about its centre to the longer one's span, so that a
    nearly straight trajectory (PC1 explaining ~99%) still shows the loss across it at the same
    scale and equal-aspect figures are not a thin strip.
    """
    t = np.asarray(trajectory, dtype=np.float64).reshape(-1, 2)
    bounds = []
    for k in range(2):
        lo, hi = min(0.0, float(t[:, k].min())), max(0.0, float(t[:, k].max()))
        pad = margin * (hi - lo) if hi > lo else 1.0
        bounds.append((lo - pad, hi + pad))
    if square:
        span = max(hi - lo for lo, hi in bounds)
        bounds = [((lo + hi - span) / 2, (lo + hi + span) / 2) for lo, hi in bounds]
    return tuple(np.linspace(lo, hi, int(num)) for lo, hi in bounds)  # type: ignore[return-value]


def resolve_grid(
    spec: np.ndarray | str | None, directions: Directions, axis: str
) -> np.ndarray | None:
    """Grid coordinates from a ``min:max:num`` spec or, for PCA directions, ``auto`` / ``auto:num``.

    ``auto`` fits the grid to the projected trajectory (:func:`fit_trajectory_grid`, 21 points).
    """
    if spec is None:
        return None
    if isinstance(spec, str) and spec.strip().split(":")[0] == "auto":
        parts = spec.strip().split(":")
        trajectory = directions.info.get("trajectory")
        if trajectory is None or directions.ndim != 2:
            raise ValueError(
                f"grid spec {axis}={spec!r}: 'auto' fits a grid to a training trajectory and needs PCA "
                f"directions (these are {directions.kind!r}); give '{axis}=min:max:num'"
            )
        try:
            num = int(parts[1]) if len(parts) > 1 else 21
        except ValueError:
            raise ValueError(f"grid spec {axis}={spec!r} must be 'auto' or 'auto:num', e.g. 'auto:21'") from None
        if len(parts) > 2 or num < 2:
            raise ValueError(f"grid spec {axis}={spec!r} must be 'auto' or 'auto:num' with num >= 2")
        return fit_trajectory_grid(np.asarray(trajectory), num)[0 if axis == "x" else 1]
    return parse_grid(spec, axis)


def _warn_trajectory_outside(directions: Directions, xc: np.ndarray, yc: np.ndarray | None) -> None:
    t = directions.info.get("trajectory")
    if t is None or yc is None:
        return
    t = np.asarray(t, dtype=np.float64).reshape(-1, 2)
    out = (t[:, 0] < xc.min()) | (t[:, 0] > xc.max()) | (t[:, 1] < yc.min()) | (t[:, 1] > yc.max())
    if out.any():
        warnings.warn(
            f"{int(out.sum())} of {len(t)} trajectory snapshots lie outside the grid "
            f"(x in [{xc.min():g}, {xc.max():g}], y in [{yc.min():g}, {yc.max():g}]; the trajectory spans "
            f"x in [{t[:, 0].min():.3g}, {t[:, 0].max():.3g}], y in [{t[:, 1].min():.3g}, {t[:, 1].max():.3g}]); "
            "use grid 'auto' (CLI: omit --x/--y) to fit it",
            stacklevel=3,
        )


def _bn_options(
    model: nn.Module,
    directions: Directions,
    data: EvalData,
    xc: np.ndarray,
    yc: np.ndarray | None,
    bn: str | None,
    engine_options: dict[str, Any],
    calibration_seed: int | None,
) -> tuple[str, dict[str, Any] | None]:
    """Resolve the BN policy, set the engine's recalibration options, check interpolated variances."""
    mode = resolve_bn_mode(bn, directions.kind, engine_options.pop("bn_recalibrate", None))
    record = None
    if mode == "recalibrate" and has_batchnorm(model):
        calib = engine_options.get("calibration")
        source = "calibration" if calib is not None else "train" if "train" in data else next(iter(data))
        if calib is None:
            calib = data[source][0]
            engine_options["calibration"] = calib
        engine_options["bn_recalibrate"] = True
        record = calibration_record(calib, calibration_seed, source)
    elif mode == "interpolate":
        check_interpolated_variance(model, directions, xc, yc)
    return mode, record


def surface_settings(
    directions: Directions,
    data: EvalData,
    xcoordinates: np.ndarray,
    ycoordinates: np.ndarray | None,
    *,
    bn: str = "interpolate",
    bn_calibration: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings stored as root attributes and compared when a file is reused."""
    settings: dict[str, Any] = {
        "model": None,
        "checkpoint_path": None,
        "checkpoint_sha256": None,
        "data": None,
        "subset_size": int(next(iter(data.values()))[0].shape[0]),
        "seed": directions.info.get("seed"),
    }
    settings.update(dict(metadata or {}))
    settings.update(
        {
            "direction_kind": directions.kind,
            "normalization": directions.info.get("normalization"),
            "ignore": directions.info.get("ignore"),
            "directions_sha256": directions.fingerprint(),
            "splits": sorted(data),
            "samples": {s: int(xs.shape[0]) for s, (xs, _) in data.items()},
            "data_sha256": {s: tensor_sha256(xs, ys) for s, (xs, ys) in data.items()},
            "xcoordinates": [float(v) for v in xcoordinates],
            "ycoordinates": None if ycoordinates is None else [float(v) for v in ycoordinates],
            "bn": bn,
            "bn_recalibrate": bn == "recalibrate" and bn_calibration is not None,
            "bn_calibration": None if bn_calibration is None else dict(bn_calibration),
            "package_version": package_version(),
        }
    )
    return settings


def evaluation_settings(engine_options: Mapping[str, Any]) -> dict[str, Any]:
    """The engine options that can change a point's values beyond :data:`landscape.engine.TOLERANCE`
    (compared on resume): ``exact`` and ``precision``. The batch size no longer can (batch-invariant BN
    recalibration; batch-dependent models run at the reference batch), so it is recorded per run only
    (root attribute ``engine_runs``: the settings of every computing run and the points it wrote)."""
    return {"exact": bool(engine_options.get("exact", False)),
            "precision": str(engine_options.get("precision", "fp32"))}


def index_ranges(flat: list[int], limit: int = 16384) -> str | None:
    """Flat (C-order) grid indices as sorted ranges, e.g. ``"0-4,7,9-12"`` (None beyond ``limit`` characters:
    HDF5 attributes are kept small)."""
    parts: list[str] = []
    vals = sorted(set(flat))
    k = 0
    while k < len(vals):
        j = k
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[k]) if j == k else f"{vals[k]}-{vals[j]}")
        k = j + 1
    text = ",".join(parts)
    return text if len(text) <= limit else None


def _previous_runs(writer: SurfaceWriter) -> list[dict[str, Any]]:
    import json

    raw = writer._f.attrs.get("engine_runs")
    if raw is None:
        return []
    try:
        runs = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
    except (ValueError, TypeError):
        return []
    return runs if isinstance(runs, list) else []


def _dist_info() -> tuple[bool, int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def compute_surface(
    path: str | os.PathLike[str],
    model: nn.Module,
    directions: Directions,
    data: EvalData,
    xcoordinates: np.ndarray | str,
    ycoordinates: np.ndarray | str | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    mode: str = "resume",
    bn: str | None = None,
    calibration_seed: int | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    loss: Any = "ce",
    metrics: Sequence[Any] | None = None,
    **engine_options: Any,
) -> Path:
    """Compute a surface into the HDF5 file ``path``, resuming and flushing as it goes.

    Only points whose ``done`` flag is unset are evaluated; each is written (values flushed, then
    the flag flushed) as soon as it is computed. ``mode`` is ``resume`` (refuse a file computed
    with other settings), ``overwrite`` or ``new``. ``metadata`` adds root attributes (model spec,
    checkpoint path and SHA-256, data spec, ...). Under ``torch.distributed`` points are sharded
    across ranks and rank 0 writes. ``shard=(i, n)`` (1 <= i <= n) computes only every n-th point of
    the coarse-to-fine order starting at the i-th (a part of a job array; ``landscape.merge`` joins
    the parts; the shard is stored in the settings). Returns the path written (differs from
    ``path`` for ``new``).

    Grid specs are ``min:max:num`` strings or arrays; for PCA directions ``auto`` (``auto:num``)
    fits the grid to the projected trajectory with a margin. ``bn`` is the BatchNorm policy of
    :mod:`landscape.bn`: ``recalibrate`` (default for interpolation and plane directions; at every
    point the exact population statistics of the engine option ``calibration``, default the train
    split, whatever the batch size; method, size, ``calibration_seed`` and SHA-256 in the settings)
    or ``interpolate`` (default otherwise; grids where an interpolated running variance turns
    negative are refused). Points whose values are not all finite are warned about and counted in
    the root attribute ``nonfinite_points``; points are evaluated coarse to fine
    (:func:`landscape.grid.coarse_to_fine`). ``loss`` and ``metrics`` are :mod:`landscape.objectives` specs
    (``"mse"``, ``"label_smoothing:0.1"``, ``["top5", "ece"]``, ``"pkg.mod:fn"`` or callables): the loss is
    stored as ``<split>_loss``, metrics as ``<split>_<name>``, both recorded in the settings.

    What ran is stored with the values: the root attribute ``engine`` (the latest run's engine
    settings) and ``engine_runs`` (every computing run: its settings, the flat grid indices it wrote
    and its counters: audited points, points recomputed on the reference path, fallbacks). A resume
    whose ``exact``, ``precision`` or calibration differ from the file's is refused, naming them.
    """
    import torch.distributed as dist

    xc = resolve_grid(xcoordinates, directions, "x")
    yc = resolve_grid(ycoordinates, directions, "y")
    _check_dims(directions, yc)
    _warn_trajectory_outside(directions, xc, yc)
    engine_options = dict(engine_options)
    bn_mode, bn_record = _bn_options(model, directions, data, xc, yc, bn, engine_options, calibration_seed)
    objectives = make_objectives(loss, metrics)
    if not objectives.is_default:
        engine_options["objectives"] = objectives
    settings = surface_settings(
        directions,
        data,
        xc,
        yc,
        bn=bn_mode,
        bn_calibration=bn_record,
        metadata={**dict(metadata or {}), **objectives.settings(data)},
    )
    # engine options that change values beyond the tolerance contract: a resume with others is refused
    settings["evaluation"] = evaluation_settings(engine_options)
    if shard is not None:
        i, n = shard
        if not 1 <= i <= n:
            raise ValueError(f"shard {i}/{n}: expected 1 <= i <= n")
        settings = {**settings, "shard": f"{i}/{n}"}
    distributed, rank, world = _dist_info()
    writer = None
    status: list[Any] = [None]
    if rank == 0:
        try:
            trajectory = directions.info.get("trajectory")
            info = {"kind": directions.kind, **{k: v for k, v in directions.info.items() if k != "trajectory"}}
            writer = SurfaceWriter.open(
                path,
                settings=settings,
                xcoordinates=xc,
                ycoordinates=yc,
                directions=directions.numpy(),
                direction_info=info,
                trajectory=None if trajectory is None else np.asarray(trajectory),
                mode=mode,
            )
            pending = writer.pending()
            if shard is not None:  # this part's points: every n-th of the coarse-to-fine order, resumable
                left = set(pending)
                grid_shape = (len(xc),) if yc is None else (len(xc), len(yc))
                pending = [p for p in coarse_to_fine(grid_shape)[shard[0] - 1 :: shard[1]] if p in left]
            status = [("ok", pending, str(writer.path))]
        except Exception as exc:
            status = [("error", f"{exc.__class__.__name__}: {exc}", None)]
            if distributed:
                dist.broadcast_object_list(status, src=0)
            raise
    if distributed:
        dist.broadcast_object_list(status, src=0)
    state, pending, out_path = status[0]
    if state == "error":
        raise RuntimeError(f"rank 0 could not open the surface file: {pending}")
    from tqdm.auto import tqdm

    try:
        shard = pending[rank::world]
        if not pending:
            return Path(out_path)
        with SurfaceEngine(model, directions, data, **engine_options) as engine:
            k = engine.points_per_forward
            rounds = math.ceil(math.ceil(len(pending) / world) / k)
            runs: list[dict[str, Any]] = []
            if writer is not None:  # the evaluation settings actually used (not compared on reuse)
                writer.set_attribute("engine", engine.settings)
                runs = _previous_runs(writer)
                runs.append({"settings": engine.settings, "points": 0, "indices": "", "counters": engine.counters})
            written: list[int] = []
            grid_shape = (len(xc),) if yc is None else (len(xc), len(yc))
            # no rate or ETA until a point is done: the first one also pays set-up and kernel compiles
            bar = tqdm(
                total=len(pending),
                disable=not progress or rank != 0,
                desc=f"landscape {Path(out_path).name}",
                unit="pt",
                bar_format=FIRST_POINT_FORMAT,
            )
            for r in range(rounds):
                chunk = shard[r * k : (r + 1) * k]
                values = engine.evaluate_many([_coords(i, xc, yc) for i in chunk]) if chunk else []
                results = list(zip(chunk, values))
                for idx, vals in results:
                    _warn_nonfinite(idx, xc, yc, vals)
                if distributed:
                    gathered: list[Any] = [None] * world if rank == 0 else None  # type: ignore[assignment]
                    dist.gather_object(results, gathered, dst=0)
                    if rank == 0:
                        results = [item for part in gathered for item in part]
                if writer is not None:
                    writer.write(results)
                    written.extend(int(np.ravel_multi_index(i, grid_shape)) for i, _ in results)
                    runs[-1].update(points=len(written), indices=index_ranges(written),
                                    counters=dict(engine.counters))
                    writer.set_attribute("engine_runs", runs)
                bar.update(len(results) if rank == 0 else 0)
                _first_done(bar)
            bar.close()
    finally:
        if writer is not None:
            writer.close()
    if distributed:
        dist.barrier()
    return Path(out_path)
