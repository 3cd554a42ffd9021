"""Eigenvalue maps (Li et al. 2018, Sec. 6 and Fig. 7): the largest and smallest Hessian eigenvalue at
every point of a surface's grid, stored in the surface file and drawn as the ``|min / max|`` ratio.

Datasets added to a surface file (see :mod:`landscape.store`)::

    /max_eig   same on-disk shape and orientation as /train_loss, float64, NaN where not computed
    /min_eig   same
    /eig_done  uint8, 1 where both are stored; attrs: settings (JSON, compared on resume), axes
               ("x" / "x,y" / "y,x": which grid axis each on-disk dimension is), surrogate (a note)

The eigenvalues of each point come from one Lanczos run of ``iterations`` Hessian-vector products
(:meth:`landscape.curvature.hessian.Hessian.extreme_eigenvalues`) at ``theta + x dx + y dy``, on the same
evaluation data. Points are computed coarse to fine (:func:`landscape.grid.coarse_to_fine`); values
are flushed before the point's ``eig_done`` flag, so an interrupted map resumes where it stopped.
A negative ``min_eig`` with a small ``|min/max|`` ratio means locally (nearly) convex; Li et al. shade
the ratio so that convex regions are dark blue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from ..figures import style
from ..grid import coarse_to_fine
from ..store import SettingsMismatchError, _open, read_directions, settings_difference
from .hessian import Hessian, LossFn, ParamSelector, shifted

EIG_NAMES = ("max_eig", "min_eig")
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


def _settings(h: Hessian, iterations: int, seed: int, params_label: str, extra: Mapping[str, Any] | None) -> dict:
    from ..surface import tensor_sha256

    out = {
        "iterations": int(iterations),
        "seed": int(seed),
        "params": params_label,
        "parameters": h.dim,
        "samples": h.n,
        "data_sha256": tensor_sha256(h.inputs, h.targets),
    }
    out.update(dict(extra or {}))
    return out


def compute_eig_map(
    path: str | os.PathLike[str],
    model: nn.Module,
    data: Any,
    *,
    iterations: int = 20,
    params: ParamSelector = "all",
    params_label: str | None = None,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    max_points: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Fill ``max_eig`` / ``min_eig`` of the surface file ``path`` (its grid and directions) and return it.

    Resumes: points whose ``eig_done`` flag is set are skipped; a map made with other settings is
    refused (:class:`landscape.store.SettingsMismatchError`) unless ``overwrite``. ``max_points``
    stops after that many new points (a budget). ``model`` must be the surface's centre model.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    stored = read_directions(path)
    dirs = {a: {n: torch.from_numpy(np.asarray(v)) for n, v in stored[a].items()} for a in ("x", "y") if a in stored}
    h = Hessian(model, data, loss_fn=loss_fn, params=params, batch_size=batch_size)
    label = params_label or (params if isinstance(params, str) else getattr(params, "__name__", "selection"))
    settings = _settings(h, iterations, seed, str(label), metadata)
    with _open(path, "r+") as f:
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
            for name in (*EIG_NAMES, "eig_done"):
                if name in f:
                    del f[name]
            for name in EIG_NAMES:
                f.create_dataset(name, data=np.full(disk_shape, np.nan), fillvalue=np.nan)
            f.create_dataset("eig_done", data=np.zeros(disk_shape, dtype=np.uint8))
            f["eig_done"].attrs["settings"] = json.dumps(settings, sort_keys=True, default=str)
            f["eig_done"].attrs["axes"] = ",".join(axes)
            f["eig_done"].attrs["surrogate"] = SURROGATE_NOTE
            f.flush()
        shape = (len(xc),) if yc is None else (len(xc), len(yc))
        done = np.asarray(f["eig_done"][()]).astype(bool)
        pending = [idx for idx in coarse_to_fine(shape) if not done[_disk(idx, axes)]]
        if max_points is not None:
            pending = pending[: max(0, int(max_points))]
        bar = tqdm(total=len(pending), disable=not progress, desc=f"eigenvalue map {path.name}", unit="pt")
        for idx in pending:
            step = {n: float(xc[idx[0]]) * d.double() for n, d in dirs["x"].items()}
            if yc is not None:
                for n, d in dirs["y"].items():
                    step[n] = step.get(n, 0.0) + float(yc[idx[1]]) * d.double()
            with shifted(model, step):
                top, bottom = h.extreme_eigenvalues(iterations, seed=seed)
            where = _disk(idx, axes)
            f["max_eig"][where] = top
            f["min_eig"][where] = bottom
            f.flush()
            f["eig_done"][where] = 1
            f.flush()
            bar.update(1)
        bar.close()
    return path


def read_eig_map(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"max_eig", "min_eig", "done"}`` as in-memory arrays (``[i, j]`` = at ``(x[i], y[j])``), the
    coordinates and the map's settings."""
    path = Path(path)
    with _open(path) as f:
        if "eig_done" not in f:
            raise ValueError(f"{path} has no eigenvalue map (run python -m landscape hessian --surface ... first)")
        axes = tuple(str(f["eig_done"].attrs.get("axes", "x,y")).split(","))
        out: dict[str, Any] = {}
        for name in (*EIG_NAMES, "eig_done"):
            arr = np.asarray(f[name][()])
            out["done" if name == "eig_done" else name] = arr.T if axes == ("y", "x") else arr
        out["done"] = out["done"].astype(bool)
        out["xcoordinates"] = np.asarray(f["xcoordinates"][()])
        out["ycoordinates"] = np.asarray(f["ycoordinates"][()]) if "ycoordinates" in f else None
        out["settings"] = json.loads(f["eig_done"].attrs.get("settings", "{}"))
        info = dict(f["directions"].attrs) if "directions" in f else {}
        out["direction_info"] = {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}
    return out


def eig_ratio(max_eig: np.ndarray, min_eig: np.ndarray) -> np.ndarray:
    """Li et al.'s ``|min_eig / max_eig|`` (NaN where the largest eigenvalue is 0 or missing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(np.asarray(min_eig) / np.asarray(max_eig))
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

    Drawn with :mod:`landscape.figures.style` (title, labelled axes, colour bar); ``formats`` as in
    :func:`landscape.figures.style.save` (default: just the PNG). Returns the first file written.
    """
    m = read_eig_map(path)
    ratio = eig_ratio(m["max_eig"], m["min_eig"])
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
            ax.set_xlabel(xlabel)
            ax.set_ylabel("|min eig / max eig|")
        else:
            X, Y = np.meshgrid(m["xcoordinates"], m["ycoordinates"], indexing="ij")
            top = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else 1.0
            mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(ratio), shading="nearest", cmap="viridis",
                                 vmin=0.0, vmax=max(top, 1e-12))
            style.nice_colorbar(fig, mesh, label="|min eig / max eig|", ax=ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_aspect("equal", adjustable="box")
        done = int(m["done"].sum())
        ax.set_title(title or f"Hessian |min/max| eigenvalue ratio ({done}/{m['done'].size} points)")
        return style.save(fig, out, formats, dpi)
