"""Eigenvalue maps (Li et al. 2018, Sec. 6 and Fig. 7): the largest and smallest Hessian eigenvalue at
every point of a surface's grid, stored in the surface file and drawn as the ``|min / max|`` ratio.

Datasets added to a surface file (see :mod:`landscape.store`), all with /train_loss's on-disk shape::

    /max_eig, /min_eig                    float64, NaN where not computed
    /max_eig_residual, /min_eig_residual  true residuals ||H u - theta u|| (each bounds its value's error)
    /eig_converged                        uint8 bit flags: 1 the largest converged, 2 the smallest
    /eig_loss                             the loss of the function whose Hessian was taken, at the point
    /eig_done  uint8, 1 where the point is stored; attrs: settings (JSON, compared on resume, with the
               model's and data's SHA-256), axes ("x" / "x,y" / "y,x"), surrogate (a note), bn (the policy)

Each point's eigenvalues come from one Lanczos run converged at both ends to ``tol`` times the spectral
scale (:meth:`landscape.curvature.hessian.Hessian.extremes`), at ``theta + x dx + y dy`` on the same
evaluation data, with each end's true residual (one product) deciding its converged flag; a point
that does not converge within ``max_iter`` products is flagged, counted and drawn hatched, and the ratio
is drawn only where both ends converged. The map takes the Hessian of the surface's own function: with
``bn = recalibrate`` the BatchNorm statistics are re-estimated at every point from the calibration set
recorded in the file (its SHA-256 is checked; the statistics are then held fixed, as the surface's
eval-mode loss holds them), and every point's loss is compared with the surface's stored loss (same
data: within :data:`landscape.engine.evaluate.TOLERANCE`), so a map can never silently describe
another function. Points are computed coarse to fine (:func:`landscape.grid.coarse_to_fine`) under
the surface lock (:class:`landscape.lock.SurfaceLock`); values are flushed before the point's
``eig_done`` flag, so an interrupted map resumes where it stopped.
A negative ``min_eig`` with a small ``|min/max|`` ratio means locally (nearly) convex; Li et al. shade
the ratio so that convex regions are dark blue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from ..bn import has_batchnorm, recalibrate_bn, tensor_sha256
from ..engine.evaluate import TOLERANCE
from ..figures import style
from ..grid import coarse_to_fine
from ..lock import SurfaceLock
from ..store import SettingsMismatchError, _open, read_directions, settings_difference
from .hessian import Hessian, LossFn, ParamSelector, shifted

EIG_NAMES = ("max_eig", "min_eig")
EIG_DATASETS = ("max_eig", "min_eig", "max_eig_residual", "min_eig_residual", "eig_loss")
SURROGATE_NOTE = (
    "Hessian of the loss as autograd differentiates it twice; for sign-binarized layers this is the "
    "straight-through surrogate (sign replaced by its STE linearization), not the true, piecewise-constant loss"
)


def _axes(f: h5py.File) -> tuple[str, ...]:
    """Which grid axis each on-disk dimension of the value datasets is (('x',), ('x','y') or ('y','x'))."""
    shape = tuple(f["done"].shape)
    if len(shape) == 1:
        return ("x",)
    nx, ny = f["xcoordinates"].shape[0], f["ycoordinates"].shape[0]
    if nx != ny:
        return ("x", "y") if shape == (nx, ny) else ("y", "x")
    # square grid: the store's format version decides (1: (nx, ny); 2 and later: (ny, nx))
    version = f.attrs.get("format_version", 1)
    return ("y", "x") if int(version) >= 2 else ("x", "y")


def _disk(index: tuple[int, ...], axes: tuple[str, ...]) -> tuple[int, ...]:
    return index if axes != ("y", "x") else (index[1], index[0])


def model_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (``state_dict`` order): identifies the centre model."""
    return tensor_sha256(*model.state_dict().values())


def _surface_function(f: h5py.File, path: Path, model: nn.Module, h: Hessian,
                      calibration: Tensor | None) -> tuple[str, Tensor | None, int, str | None]:
    """The surface's BN policy, the calibration set (checked against its recorded SHA-256), the
    recalibration batch size and the split whose stored loss the map's loss must reproduce."""
    settings = json.loads(f.attrs.get("settings", "{}"))
    engine = json.loads(f.attrs.get("engine", "{}")) if "engine" in f.attrs else {}
    bn = str(settings.get("bn") or "interpolate")
    data_hash = tensor_sha256(h.inputs, h.targets)
    split = next((s for s, v in (settings.get("data_sha256") or {}).items() if v == data_hash), None)
    if bn != "recalibrate" or not has_batchnorm(model):
        return bn, None, 0, split
    record = settings.get("bn_calibration") or {}
    calib = calibration if calibration is not None else h.inputs
    if record.get("sha256") and tensor_sha256(calib) != record["sha256"]:
        raise ValueError(
            f"{path} recalibrates BatchNorm at every point on a calibration set of {record.get('size')} samples "
            f"(source {record.get('source')!r}, SHA-256 {str(record['sha256'])[:12]}...); the "
            f"{'calibration passed' if calibration is not None else 'eigenvalue data'} differ: pass that set as "
            "calibration= (CLI: the --subset/--data-seed/--split the surface was computed with)"
        )
    return bn, calib.to(h.device), int(engine.get("batch_size") or 128), split


@contextmanager
def _bn_buffers_kept(model: nn.Module) -> Iterator[None]:
    """Restore every BatchNorm buffer after the block (recalibration changes them)."""
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    named = dict(model.named_buffers())
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in saved.items():
                named[n].copy_(b)


def _settings(h: Hessian, model: nn.Module, tol: float, max_iter: int, seed: int, params_label: str, bn: str,
              extra: Mapping[str, Any] | None) -> dict:
    out = {
        "method": "lanczos-extremes",
        "tol": float(tol),
        "max_iter": int(max_iter),
        "seed": int(seed),
        "params": params_label,
        "parameters": h.dim,
        "samples": h.n,
        "data_sha256": tensor_sha256(h.inputs, h.targets),
        "model_sha256": model_sha256(model),
        "bn": bn,
    }
    out.update(dict(extra or {}))
    return out


def compute_eig_map(
    path: str | os.PathLike[str],
    model: nn.Module,
    data: Any,
    *,
    tol: float = 1e-4,
    max_iter: int = 200,
    params: ParamSelector = "all",
    params_label: str | None = None,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    batch_size: int = 256,
    calibration: Tensor | None = None,
    overwrite: bool = False,
    max_points: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Fill the eigenvalue map of the surface file ``path`` (its grid, directions and BN policy); returns it.

    Resumes: points whose ``eig_done`` flag is set are skipped; a map made with other settings, another
    model or other data is refused (:class:`landscape.store.SettingsMismatchError`) unless ``overwrite``.
    ``max_points`` stops after that many new points (a budget). ``model`` must be the surface's centre
    model; ``calibration`` the surface's BN calibration inputs when it recalibrates (default: ``data``'s
    inputs, checked against the recorded SHA-256). Points that did not converge are counted in the
    ``eig_unconverged`` attribute of ``eig_done``.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    stored = read_directions(path)
    dirs = {a: {n: torch.from_numpy(np.asarray(v)) for n, v in stored[a].items()} for a in ("x", "y") if a in stored}
    h = Hessian(model, data, loss_fn=loss_fn, params=params, batch_size=batch_size)
    label = params_label or (params if isinstance(params, str) else getattr(params, "__name__", "selection"))
    with SurfaceLock(path), _open(path, "r+") as f:
        bn, calib, calib_batch, split = _surface_function(f, path, model, h, calibration)
        settings = _settings(h, model, tol, max_iter, seed, str(label), bn, metadata)
        xc = np.asarray(f["xcoordinates"][()])
        yc = np.asarray(f["ycoordinates"][()]) if "ycoordinates" in f else None
        if (yc is None) != ("y" not in dirs):
            raise ValueError(f"{path}: the grid and the stored directions disagree on the dimension")
        axes = _axes(f)
        disk_shape = tuple(f["done"].shape)
        if "eig_done" in f and not overwrite:
            old = json.loads(f["eig_done"].attrs.get("settings", "{}"))
            diff = settings_difference(old, settings)
            if diff:
                lines = "\n".join(f"  {k}: file has {a!r}, requested {b!r}" for k, (a, b) in diff.items())
                raise SettingsMismatchError(
                    f"{path} holds an eigenvalue map computed with different settings:\n{lines}\n"
                    "Refusing to mix them; pass overwrite (CLI --overwrite-eig) to recompute it."
                )
        else:
            for name in (*EIG_DATASETS, "eig_converged", "eig_done"):
                if name in f:
                    del f[name]
            for name in EIG_DATASETS:
                f.create_dataset(name, data=np.full(disk_shape, np.nan), fillvalue=np.nan)
            f.create_dataset("eig_converged", data=np.zeros(disk_shape, dtype=np.uint8))
            f.create_dataset("eig_done", data=np.zeros(disk_shape, dtype=np.uint8))
            f["eig_done"].attrs["settings"] = json.dumps(settings, sort_keys=True, default=str)
            f["eig_done"].attrs["axes"] = ",".join(axes)
            f["eig_done"].attrs["surrogate"] = SURROGATE_NOTE
            f["eig_done"].attrs["bn"] = bn
            f.flush()
        shape = (len(xc),) if yc is None else (len(xc), len(yc))
        done = np.asarray(f["eig_done"][()]).astype(bool)
        surface_loss = np.asarray(f[f"{split}_loss"][()]) if split and f"{split}_loss" in f else None
        pending = [idx for idx in coarse_to_fine(shape) if not done[_disk(idx, axes)]]
        if max_points is not None:
            pending = pending[: max(0, int(max_points))]
        bar = tqdm(total=len(pending), disable=not progress, desc=f"eigenvalue map {path.name}", unit="pt")
        for idx in pending:
            step = {n: float(xc[idx[0]]) * d.double() for n, d in dirs["x"].items()}
            if yc is not None:
                for n, d in dirs["y"].items():
                    step[n] = step.get(n, 0.0) + float(yc[idx[1]]) * d.double()
            where = _disk(idx, axes)
            with shifted(model, step), _bn_buffers_kept(model):
                if calib is not None:
                    recalibrate_bn(model, calib, calib_batch)
                loss = h.loss()
                _check_loss(path, split, surface_loss, where, loss, idx, xc, yc)
                e = h.extremes(tol=tol, max_iter=max_iter, seed=seed)
            for name, value in zip(EIG_DATASETS, (e.max, e.min, e.max_residual, e.min_residual, loss)):
                f[name][where] = value
            f["eig_converged"][where] = int(e.max_converged) | (2 * int(e.min_converged))
            f.flush()
            f["eig_done"][where] = 1
            unconverged = int((np.asarray(f["eig_converged"][()])[np.asarray(f["eig_done"][()]) > 0] != 3).sum())
            f["eig_done"].attrs["eig_unconverged"] = unconverged
            f.flush()
            bar.set_postfix(unconverged=unconverged)
            bar.update(1)
        bar.close()
    return path


def _check_loss(path: Path, split: str | None, surface_loss: np.ndarray | None, where: tuple[int, ...], loss: float,
                idx: tuple[int, ...], xc: np.ndarray, yc: np.ndarray | None) -> None:
    """Refuse a point whose loss is not the surface's: the Hessian would belong to another function."""
    if surface_loss is None:
        return
    stored = float(surface_loss[where])
    if not np.isfinite(stored):
        return  # not computed (a partial surface) or non-finite there
    if abs(loss - stored) > TOLERANCE["loss_rel"] * max(abs(stored), 1e-12):
        at = f"x={xc[idx[0]]:g}" + (f", y={yc[idx[1]]:g}" if yc is not None else "")
        raise ValueError(
            f"{path}: at {at} the eigenvalue map's loss is {loss:.6g} but the surface stores {split}_loss "
            f"{stored:.6g} (tolerance {TOLERANCE['loss_rel']:g} relative): the map would take the Hessian of "
            "another function; pass the surface's centre model and its data (and BN calibration set)"
        )


def read_eig_map(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"max_eig", "min_eig", "max_eig_residual", "min_eig_residual", "eig_loss", "converged", "done"}`` as
    in-memory arrays (``[i, j]`` = at ``(x[i], y[j])``; ``converged`` holds the bit flags, 3 = both ends),
    the coordinates and the map's settings. Maps from before residuals were stored read as unconverged."""
    path = Path(path)
    with _open(path) as f:
        if "eig_done" not in f:
            raise ValueError(f"{path} has no eigenvalue map (run python -m landscape hessian --surface ... first)")
        axes = tuple(str(f["eig_done"].attrs.get("axes", "x,y")).split(","))
        out: dict[str, Any] = {}
        shape = f["eig_done"].shape
        for name in (*EIG_DATASETS, "eig_converged", "eig_done"):
            fill = 0 if name == "eig_converged" else np.nan
            arr = np.asarray(f[name][()]) if name in f else np.full(shape, fill)
            key = {"eig_done": "done", "eig_converged": "converged"}.get(name, name)
            out[key] = arr.T if axes == ("y", "x") else arr
        out["done"] = out["done"].astype(bool)
        out["converged"] = out["converged"].astype(np.uint8)
        out["xcoordinates"] = np.asarray(f["xcoordinates"][()])
        out["ycoordinates"] = np.asarray(f["ycoordinates"][()]) if "ycoordinates" in f else None
        out["settings"] = json.loads(f["eig_done"].attrs.get("settings", "{}"))
        info = dict(f["directions"].attrs) if "directions" in f else {}
        out["direction_info"] = {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}
    return out


def eig_ratio(max_eig: np.ndarray, min_eig: np.ndarray, converged: np.ndarray | None = None) -> np.ndarray:
    """Li et al.'s ``|min_eig / max_eig|`` (NaN where the largest eigenvalue is 0 or missing, and where
    ``converged`` (the map's bit flags) says not both ends converged)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(np.asarray(min_eig) / np.asarray(max_eig))
    if converged is not None:
        r = np.where(np.asarray(converged) == 3, r, np.nan)
    return np.where(np.isfinite(r), r, np.nan)


def plot_eig_ratio(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    formats: Sequence[str] | None = None,
    dpi: int = style.DEFAULT_DPI,
) -> Path:
    """The ``|min/max|`` eigenvalue ratio over the grid (Li et al. Fig. 7), next to the file by default.

    Drawn only where both ends converged; computed points that did not converge are hatched (2D) or
    marked with a cross (1D) and counted in the title. Style of :mod:`landscape.figures.style` (title,
    labelled axes, colour bar); ``formats`` as in :func:`landscape.figures.style.save` (default: the PNG).
    Returns the first file written.
    """
    m = read_eig_map(path)
    ratio = eig_ratio(m["max_eig"], m["min_eig"], m["converged"])
    failed = m["done"] & (m["converged"] != 3)
    path = Path(path)
    out = Path(out) if out else path.with_name(f"{path.stem}_eig_ratio.png")
    two_d = m["ycoordinates"] is not None
    with style.context():
        fig = style.figure(figsize=(5.0, 4.2) if two_d else (5.2, 3.4), layout="constrained")
        ax = fig.add_subplot()
        info = m["direction_info"]
        xlabel, ylabel = style.axis_labels(info.get("kind"), info)
        if not two_d:
            ax.plot(m["xcoordinates"], ratio, marker="o")
            if failed.any():
                ax.plot(m["xcoordinates"][failed], np.zeros(int(failed.sum())), "x", color="C3",
                        label="not converged")
                ax.legend()
            ax.set_xlabel(xlabel)
            ax.set_ylabel("|min eig / max eig|")
        else:
            X, Y = np.meshgrid(m["xcoordinates"], m["ycoordinates"], indexing="ij")
            top = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else 1.0
            mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(ratio), shading="nearest", cmap="viridis",
                                 vmin=0.0, vmax=max(top, 1e-12))
            if failed.any():
                ax.pcolor(X, Y, np.ma.masked_where(~failed, np.ones_like(ratio)), shading="nearest",
                          hatch="///", facecolor="none", edgecolor="0.4", linewidth=0.0)
            style.nice_colorbar(fig, mesh, label="|min eig / max eig|", ax=ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_aspect("equal", adjustable="box")
        done = int(m["done"].sum())
        note = f", {int(failed.sum())} not converged (hatched)" if failed.any() else ""
        ax.set_title(title or f"Hessian |min/max| eigenvalue ratio ({done}/{m['done'].size} points{note})")
        if title and failed.any():
            ax.set_title(f"{title}\n{int(failed.sum())} of {done} points not converged (hatched)", fontsize="small")
        return style.save(fig, out, formats, dpi)
