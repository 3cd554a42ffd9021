"""Directions in weight space (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

A :class:`Directions` holds one tensor per parameter name (``model.named_parameters()`` order) for
``x`` and, for 2D surfaces, ``y``. Kinds:

* ``random``: standard Gaussian, seeded (``torch.Generator``; all x tensors drawn first, then all y
  tensors, one per parameter including ignored ones, so the draw does not depend on the rules
  below), then normalized:

  - ``filter`` (Li et al. Sec. 4): every slice along dim 0 (a conv output filter, a linear row)
    is rescaled to the Frobenius norm of the same slice of the weights (epsilon 1e-10);
  - ``layer``: the whole tensor is rescaled to the norm of the whole parameter tensor;
  - ``none``: the raw Gaussian.

  Tensors with at most one dimension (biases, BatchNorm gamma/beta, PReLU slopes): ``ignore``
  (direction zero, the reference tool's ``--xignore biasbn``) or ``filter`` (the whole vector is
  treated as one filter and rescaled to the parameter's norm; not element-wise, which would move
  every entry by exactly its own magnitude). BatchNorm running statistics are buffers and never
  move under random directions.
* ``interpolate``: the line from model A to model B (``theta_B - theta_A``, unnormalized: x=0 is
  A, x=1 is B). Floating buffers (BN running statistics) are included by default so that both
  ends reproduce the two models exactly (the reference tool's "states" directions).
* ``plane``: through three models (``B - A`` and ``C - A``, oblique as in Li et al.'s tool, or with
  ``C - A`` orthogonalized against ``B - A``); the models' coordinates are stored as ``anchors``.
* ``pca``: the first two principal components of a training trajectory (Li et al. Sec. 7): the
  differences of the saved snapshots from the final weights, centered, first two right singular
  vectors (same as ``sklearn.decomposition.PCA(2)``), not filter-normalized; the snapshots are
  projected onto the plane and stored with the surface.
* ``file``: the reference tool's direction files (groups ``xdirection``/``ydirection``, datasets
  ``'0'..'N-1'`` in ``model.parameters()`` order, or state_dict order for its "states" files).

Binary networks: the direction lives on the latent real-valued weights (the parameters) and the
surface is taken as the model binarizes them in eval mode. For pure ``sign`` weights the loss is
piecewise constant in the latent weights: at fine resolution the surface is a staircase, whose
Hessian is zero almost everywhere, so finite-difference measures on the grid
(:mod:`landscape.metrics`), not Hessian eigenvalues, describe it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn

NORMALIZATIONS = ("filter", "layer", "none")
BIAS_BN_RULES = ("ignore", "filter")
_EPS = 1e-10


@dataclass
class Directions:
    """One or two directions, each a name -> tensor mapping (float32, CPU)."""

    x: dict[str, Tensor]
    y: dict[str, Tensor] | None = None
    kind: str = "random"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def names(self) -> list[str]:
        return list(self.x)

    def axes(self) -> dict[str, dict[str, Tensor]]:
        return {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}

    def fingerprint(self) -> str:
        """SHA-256 over names, shapes and float32 bytes: equal directions give equal fingerprints."""
        h = hashlib.sha256()
        for axis, d in self.axes().items():
            for name, t in d.items():
                h.update(f"{axis}:{name}:{tuple(t.shape)}".encode())
                h.update(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
        return h.hexdigest()

    def cosine(self) -> float | None:
        """Cosine between x and y (Li et al. note random high-dimensional directions are ~orthogonal)."""
        if self.y is None:
            return None
        return direction_cosine(self.x, self.y)

    def numpy(self) -> dict[str, dict[str, np.ndarray]]:
        return {a: {n: t.detach().cpu().numpy() for n, t in d.items()} for a, d in self.axes().items()}


def direction_cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Cosine similarity of two directions flattened over their common names."""
    dot = na = nb = 0.0
    for name, t in a.items():
        u = t.double().reshape(-1)
        v = b[name].double().reshape(-1)
        dot += float(u @ v)
        na += float(u @ u)
        nb += float(v @ v)
    return dot / max(np.sqrt(na * nb), _EPS)


def normalize_direction(d: Tensor, w: Tensor, normalization: str) -> Tensor:
    """Rescale ``d`` relative to weights ``w`` (in place on a copy); see the module docstring."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    d = d.clone()
    w = w.detach().to(d.dtype)
    if normalization == "none":
        return d
    if normalization == "layer" or d.dim() <= 1:
        return d.mul_(w.norm() / (d.norm() + _EPS))
    dn = d.reshape(d.shape[0], -1).norm(dim=1)
    wn = w.reshape(w.shape[0], -1).norm(dim=1)
    scale = (wn / (dn + _EPS)).reshape(-1, *([1] * (d.dim() - 1)))
    return d.mul_(scale)


def _check_rules(normalization: str, bias_bn: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if bias_bn not in BIAS_BN_RULES:
        raise ValueError(f"bias_bn (ignore rule) must be one of {BIAS_BN_RULES}, got {bias_bn!r}")


def random_direction(
    model: nn.Module, generator: torch.Generator, *, normalization: str = "filter", bias_bn: str = "ignore"
) -> dict[str, Tensor]:
    """One random Gaussian direction over ``model.named_parameters()`` (see module docstring)."""
    _check_rules(normalization, bias_bn)
    out: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        g = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        if p.dim() <= 1 and bias_bn == "ignore":
            out[name] = torch.zeros(p.shape, dtype=torch.float32)
        else:
            out[name] = normalize_direction(g, p.detach().float().cpu(), normalization)
    return out


def random_directions(
    model: nn.Module,
    *,
    ndim: int = 2,
    seed: int = 0,
    normalization: str = "filter",
    bias_bn: str = "ignore",
) -> Directions:
    """Seeded random directions for a 1D (``ndim=1``) or 2D surface around ``model``'s weights."""
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")
    _check_rules(normalization, bias_bn)
    gen = torch.Generator().manual_seed(int(seed))
    x = random_direction(model, gen, normalization=normalization, bias_bn=bias_bn)
    y = random_direction(model, gen, normalization=normalization, bias_bn=bias_bn) if ndim == 2 else None
    d = Directions(x, y, "random", {"normalization": normalization, "ignore": bias_bn, "seed": int(seed)})
    if y is not None:
        d.info["cosine_xy"] = d.cosine()
    return d


def _state(obj: nn.Module | Mapping[str, Tensor], include_buffers: bool) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        named = dict(obj.named_parameters())
        if include_buffers:
            named.update({n: b for n, b in obj.named_buffers() if b.is_floating_point()})
        return {n: t.detach().float().cpu() for n, t in named.items()}
    return {
        n: t.detach().float().cpu() for n, t in obj.items() if torch.is_tensor(t) and t.is_floating_point()
    }


def _difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: list[str], what: str) -> dict:
    out = {}
    for n in names:
        if n not in b:
            raise KeyError(f"{what}: entry {n!r} of the first model is missing from the other model")
        if a[n].shape != b[n].shape:
            raise ValueError(f"{what}: entry {n!r} has shape {tuple(a[n].shape)} vs {tuple(b[n].shape)}")
        out[n] = (b[n] - a[n]).float()
    return out


def interpolation_direction(
    model_a: nn.Module, model_b: nn.Module | Mapping[str, Tensor], *, include_buffers: bool = True
) -> Directions:
    """The 1D line from ``model_a`` (x=0) to ``model_b`` (x=1), unnormalized.

    With ``include_buffers`` floating buffers (BN running statistics) move along the line too, so
    x=1 reproduces model B in eval mode; otherwise they stay at model A's values.
    """
    a = _state(model_a, include_buffers)
    b = _state(model_b, include_buffers)
    return Directions(
        _difference(a, b, list(a), "interpolation"),
        None,
        "interpolate",
        {"normalization": "none", "ignore": "none", "include_buffers": include_buffers},
    )


def plane_directions(
    model_a: nn.Module,
    model_b: nn.Module | Mapping[str, Tensor],
    model_c: nn.Module | Mapping[str, Tensor],
    *,
    include_buffers: bool = True,
    orthogonalize: bool = False,
) -> Directions:
    """The plane through three models, A at the origin, in units of ``B - A`` and ``C - A``.

    Default (Li et al.'s ``--model_file2/--model_file3``): x = B - A, y = C - A, not orthogonalized, so
    A, B and C sit at (0, 0), (1, 0) and (0, 1) and the axes are oblique (their cosine is
    ``info['cosine_xy']``). ``orthogonalize=True`` (Garipov et al. 2018's plane): x = B - A and y = the
    part of C - A orthogonal to it (Gram-Schmidt over every moved entry), so the axes are orthogonal
    and C sits at (<C - A, B - A> / |B - A|^2, 1). Either way ``info['anchors']`` holds the three
    models' coordinates (drawn on the figures) and ``info['axes']`` says which plane it is.
    Floating buffers (BN running statistics) move with the weights unless ``include_buffers=False``;
    the surface recalibrates BN at every point by default (:func:`landscape.bn.default_bn_mode`).
    """
    a = _state(model_a, include_buffers)
    dx = _difference(a, _state(model_b, include_buffers), list(a), "plane")
    dy = _difference(a, _state(model_c, include_buffers), list(a), "plane")
    if not any(bool(t.any()) for t in dx.values()):
        raise ValueError("plane: models A and B are identical (B - A is zero); the plane needs three distinct models")
    cx = 0.0
    if orthogonalize:
        uu = sum(float(t.double().pow(2).sum()) for t in dx.values())
        cx = sum(float((dx[n].double() * dy[n].double()).sum()) for n in dx) / uu
        dy = {n: (dy[n].double() - cx * dx[n].double()).float() for n in dy}
    if not any(bool(t.any()) for t in dy.values()):
        raise ValueError("plane: C - A is zero or parallel to B - A; the three models lie on one line")
    axes = ("x = B - A, y = the part of C - A orthogonal to B - A (Gram-Schmidt; Garipov et al. 2018)"
            if orthogonalize else "x = B - A, y = C - A, not orthogonalized (Li et al. 2018's plane through three "
            "models; oblique axes, see cosine_xy)")
    d = Directions(
        dx, dy, "plane", {"normalization": "none", "ignore": "none", "include_buffers": include_buffers,
                          "orthogonalized": bool(orthogonalize), "axes": axes,
                          "anchors": {"A": [0.0, 0.0], "B": [1.0, 0.0], "C": [cx, 1.0]}}
    )
    d.info["cosine_xy"] = d.cosine()
    return d


# ----------------------------------------------------------------------------- trajectories / PCA
def load_trajectory(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a weight trajectory HDF5 file: returns ``(steps, {name: array (T, *shape)})``.

    Accepted layouts (the trainer's and simple hand-made ones):

    * ``params/<name>`` (or ``weights/<name>``) datasets of shape ``(T, *shape)``, optional ``steps``
      / ``epochs`` dataset;
    * one flat dataset ``weights`` (or ``flat``) of shape ``(T, P)`` with attribute ``names`` (JSON
      list or string array) and ``shapes`` (JSON list of lists), optional ``steps``/``epochs``;
    * one group per snapshot (sorted by name, e.g. ``epoch_0003``), each holding ``<name>``.
    """
    import json

    path = Path(path)
    if not path.exists() or not h5py.is_hdf5(str(path)):
        raise ValueError(f"{path}: not an HDF5 trajectory file")
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: damaged trajectory file ({exc})") from None
    with f:
        steps = None
        for key in ("steps", "epochs", "step", "epoch"):
            if key in f and isinstance(f[key], h5py.Dataset):
                steps = np.asarray(f[key][()]).reshape(-1)
                break
        series: dict[str, np.ndarray] = {}
        for key in ("params", "weights", "flat", "parameters"):
            if key not in f:
                continue
            obj = f[key]
            if isinstance(obj, h5py.Group):
                names = obj.attrs.get("names")
                names = json.loads(names) if isinstance(names, str | bytes) else list(obj.keys())

                def _collect(grp: h5py.Group, prefix: str = "") -> None:
                    for k, v in grp.items():
                        if isinstance(v, h5py.Group):
                            _collect(v, f"{prefix}{k}.")
                        else:
                            series[f"{prefix}{k}"] = np.asarray(v[()])

                _collect(obj)
            elif obj.ndim == 2:
                raw = obj.attrs.get("names")
                if raw is None:
                    raise ValueError(f"{path}: flat dataset '{key}' needs a 'names' attribute")
                names = (
                    json.loads(raw)
                    if isinstance(raw, str | bytes)
                    else [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
                )
                shapes_raw = obj.attrs.get("shapes")
                if shapes_raw is None:
                    raise ValueError(f"{path}: flat dataset '{key}' needs a 'shapes' attribute")
                shapes = json.loads(shapes_raw) if isinstance(shapes_raw, str | bytes) else shapes_raw
                data = np.asarray(obj[()])
                off = 0
                for n, s in zip(names, shapes):
                    size = int(np.prod(s)) if len(s) else 1
                    series[n] = data[:, off : off + size].reshape(data.shape[0], *[int(v) for v in s])
                    off += size
                if off != data.shape[1]:
                    raise ValueError(f"{path}: names/shapes cover {off} values, dataset has {data.shape[1]}")
            if series:
                break
        if not series:  # one group per snapshot
            groups = sorted(k for k in f.keys() if isinstance(f[k], h5py.Group))
            snaps = []
            for g in groups:
                entry = {}

                def _collect2(grp: h5py.Group, prefix: str = "", entry: dict = entry) -> None:
                    for k, v in grp.items():
                        if isinstance(v, h5py.Group):
                            _collect2(v, f"{prefix}{k}.")
                        else:
                            entry[f"{prefix}{k}"] = np.asarray(v[()])

                _collect2(f[g])
                snaps.append(entry)
            if not snaps:
                raise ValueError(
                    f"{path}: no trajectory found (expected 'params/<name>' datasets of shape "
                    "(T, ...), a flat 'weights' (T, P) dataset, or one group per snapshot)"
                )
            for n in snaps[0]:
                series[n] = np.stack([s[n] for s in snaps])
    lengths = {v.shape[0] for v in series.values()}
    if len(lengths) != 1:
        raise ValueError(f"{path}: trajectory entries have different numbers of snapshots {sorted(lengths)}")
    t = lengths.pop()
    if steps is None or len(steps) != t:
        steps = np.arange(t)
    return steps, series


def pca_directions(
    trajectory: str | os.PathLike[str] | Mapping[str, np.ndarray],
    model: nn.Module,
    *,
    bias_bn: str = "ignore",
) -> Directions:
    """First two PCA components of a trajectory around ``model``'s (final) weights (Li et al. Sec. 7).

    Rows are ``snapshot - final`` over the model's parameters (1-D tensors zeroed with
    ``bias_bn='ignore'``); the rows are centered and the two leading right singular vectors are the
    directions (unit norm, orthogonal). ``info['trajectory']`` holds every snapshot's projection and
    ``info['explained_variance_ratio']`` the PCA ratios.
    """
    _check_rules("none", bias_bn)
    steps, series = (load_trajectory(trajectory) if not isinstance(trajectory, Mapping)
                     else (None, dict(trajectory)))
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in series]
    if missing:
        raise KeyError(
            f"trajectory lacks parameters of the model: {missing[:5]}{'...' if len(missing) > 5 else ''}"
        )
    t = next(iter(series.values())).shape[0]
    if t < 3:
        raise ValueError(f"PCA directions need at least 3 snapshots, the trajectory has {t}")
    cols, layout = [], []
    for n, p in params.items():
        final = p.detach().float().cpu().numpy().reshape(-1)
        snap = np.asarray(series[n], dtype=np.float32).reshape(t, -1)
        if snap.shape[1] != final.size:
            raise ValueError(
                f"trajectory entry {n!r} has {snap.shape[1]} values per snapshot, model has {final.size}"
            )
        diff = snap - final[None, :]
        if p.dim() <= 1 and bias_bn == "ignore":
            diff = np.zeros_like(diff)
        cols.append(diff)
        layout.append((n, tuple(p.shape), final.size))
    mat = np.concatenate(cols, axis=1).astype(np.float64)
    centered = mat - mat.mean(axis=0, keepdims=True)
    gram = centered @ centered.T  # (T, T): cheap even for millions of parameters
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    comps = []
    for k in range(2):
        if evals[k] <= 0:
            raise ValueError("the trajectory has fewer than two independent directions of motion")
        v = centered.T @ evecs[:, k] / np.sqrt(evals[k])
        comps.append(v / np.linalg.norm(v))
    proj = mat @ np.stack(comps, axis=1)

    def _unflat(v: np.ndarray) -> dict[str, Tensor]:
        out, off = {}, 0
        for n, shape, size in layout:
            out[n] = torch.from_numpy(v[off : off + size].astype(np.float32).reshape(shape))
            off += size
        return out

    ratio = (evals[:2] / evals.sum()).tolist() if evals.sum() > 0 else [0.0, 0.0]
    return Directions(
        _unflat(comps[0]),
        _unflat(comps[1]),
        "pca",
        {
            "normalization": "none",
            "ignore": bias_bn,
            "explained_variance_ratio": ratio,
            "trajectory": proj.tolist(),
            "snapshots": int(t),
            # what each snapshot is (the trainer's epochs or steps), for labels on the trajectory
            **({"trajectory_steps": [float(v) for v in steps]} if steps is not None and len(steps) == t else {}),
        },
    )


# ----------------------------------------------------------------------------- reference-tool files
def read_reference(path: str | os.PathLike[str], model: nn.Module) -> Directions:
    """Read a direction file of Li et al.'s tool (``xdirection``/``ydirection``, datasets ``'0'..``).

    Files with one dataset per parameter map onto ``model.parameters()`` order; files with one per
    ``state_dict`` entry (its "states" directions) map onto state_dict order, integer entries
    (``num_batches_tracked``) dropped.
    """
    path = Path(path)
    if not path.exists() or not h5py.is_hdf5(str(path)):
        raise ValueError(f"{path}: not an HDF5 direction file")
    params = dict(model.named_parameters())
    states = model.state_dict()
    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: damaged direction file ({exc})") from None
    with f:
        if "xdirection" not in f:
            raise ValueError(f"{path}: no 'xdirection' group (expected a reference-tool direction file)")
        axes = {}
        for axis, key in (("x", "xdirection"), ("y", "ydirection")):
            if key not in f:
                continue
            grp = f[key]
            count = len(grp)
            if count == len(params):
                names = list(params)
                targets = params
            elif count == len(states):
                names = list(states)
                targets = states
            else:
                raise ValueError(
                    f"{path}: '{key}' has {count} datasets; the model has {len(params)} parameters "
                    f"and {len(states)} state_dict entries"
                )
            d = {}
            for i, n in enumerate(names):
                if str(i) not in grp:
                    raise ValueError(f"{path}: '{key}/{i}' is missing")
                arr = np.asarray(grp[str(i)][()])
                if tuple(arr.shape) != tuple(targets[n].shape):
                    raise ValueError(
                        f"{path}: '{key}/{i}' has shape {arr.shape}, model entry {n!r} has "
                        f"{tuple(targets[n].shape)} (another model, or another parameter order?)"
                    )
                if torch.is_tensor(targets[n]) and not targets[n].is_floating_point():
                    continue
                d[n] = torch.from_numpy(arr.astype(np.float32))
            axes[axis] = d
    out = Directions(
        axes["x"], axes.get("y"), "file", {"normalization": "file", "ignore": "file", "source": str(path)}
    )
    if out.y is not None:
        out.info["cosine_xy"] = out.cosine()
    return out


def write_reference(directions: Directions, path: str | os.PathLike[str], model: nn.Module) -> Path:
    """Export directions in the reference tool's layout (``model.parameters()`` order, zeros filled)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    extra = [n for n in directions.names if n not in params]
    if extra:
        raise ValueError(
            f"directions move non-parameters {extra[:3]} (buffers); the reference tool's "
            "parameter-order files cannot hold them"
        )
    with h5py.File(path, "w") as f:
        for axis, key in (("x", "xdirection"), ("y", "ydirection")):
            d = directions.axes().get(axis)
            if d is None:
                continue
            grp = f.create_group(key)
            for i, (n, p) in enumerate(params.items()):
                t = d.get(n)
                arr = np.zeros(tuple(p.shape), np.float32) if t is None else t.detach().float().cpu().numpy()
                grp.create_dataset(str(i), data=arr)
    return path


def directions_from_arrays(stored: Mapping[str, Any], kind: str = "stored") -> Directions:
    """Rebuild :class:`Directions` from :func:`landscape.store.read_directions` output."""
    x = {n: torch.from_numpy(np.asarray(a, np.float32)) for n, a in stored["x"].items()}
    y = (
        {n: torch.from_numpy(np.asarray(a, np.float32)) for n, a in stored["y"].items()}
        if "y" in stored
        else None
    )
    return Directions(x, y, kind, dict(stored.get("info", {})))
