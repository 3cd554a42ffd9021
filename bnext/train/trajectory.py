"""Weight trajectory file: the model's parameters every k epochs, for PCA directions (landscape).

Schema (HDF5, one file ``runs/<name>/trajectory.h5``)::

    /                attrs: format = "bnext-trajectory", version = 1,
                            model = JSON of the model spec (name, num_classes, input_size, options)
    /epochs          int64 (T,)  completed epochs at each snapshot (0 = the initial weights)
    /params/<name>   float32 (T, *shape) per parameter, ``<name>`` the key of
                     ``model.named_parameters()``; all extendable along axis 0

Snapshots are taken at epoch 0, every ``every`` epochs and at the last epoch.  On resume,
snapshots after the resumed epoch are dropped, so the file matches an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from torch import nn

__all__ = ["FORMAT", "VERSION", "TrajectoryError", "TrajectoryWriter", "read_trajectory"]

FORMAT = "bnext-trajectory"
VERSION = 1


class TrajectoryError(ValueError):
    """A file is not a readable weight trajectory."""


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


class TrajectoryWriter:
    """Append parameter snapshots to a trajectory file (see module docstring)."""

    def __init__(self, path: str | os.PathLike, model: nn.Module, *, keep_until: int | None = None) -> None:
        self.path = Path(path)
        model = _unwrap(model)
        names = [n for n, _ in model.named_parameters()]
        if self.path.exists() and keep_until is not None:
            with h5py.File(self.path, "a") as f:
                _check(f, self.path)
                if sorted(f["params"]) != sorted(names):
                    raise TrajectoryError(f"{self.path} holds other parameters than this model; remove it")
                epochs = f["epochs"][()]
                keep = int(np.searchsorted(epochs, keep_until, side="right"))
                f["epochs"].resize((keep,))
                for n in names:
                    ds = f["params"][n]
                    ds.resize((keep, *ds.shape[1:]))
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            spec = getattr(model, "spec", None)
            f.attrs["model"] = json.dumps(spec if spec is not None else {})
            f.create_dataset("epochs", shape=(0,), maxshape=(None,), dtype="i8", chunks=(64,))
            g = f.create_group("params")
            for n, p in model.named_parameters():
                shape = tuple(p.shape)
                g.create_dataset(n, shape=(0, *shape), maxshape=(None, *shape), dtype="f4", chunks=(1, *shape))

    def append(self, model: nn.Module, epoch: int) -> None:
        """Add the current parameters as the snapshot of ``epoch`` (completed epochs)."""
        model = _unwrap(model)
        with h5py.File(self.path, "a") as f:
            ep = f["epochs"]
            t = ep.shape[0]
            if t and ep[t - 1] >= epoch:
                return  # already there (resumed run)
            ep.resize((t + 1,))
            ep[t] = epoch
            for n, p in model.named_parameters():
                ds = f["params"][n]
                ds.resize((t + 1, *ds.shape[1:]))
                ds[t] = p.detach().float().cpu().numpy()


def _check(f: h5py.File, path: Path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise TrajectoryError(f"{path} is not a weight trajectory (attribute format={f.attrs.get('format')!r}, "
                              f"expected {FORMAT!r})")
    if int(f.attrs.get("version", 0)) > VERSION:
        raise TrajectoryError(f"{path} has trajectory version {f.attrs['version']}; this reader knows <= {VERSION}")
    if "epochs" not in f or "params" not in f:
        raise TrajectoryError(f"{path} lacks the 'epochs' dataset or the 'params' group")


def read_trajectory(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(epochs [T], {param name: array [T, *shape]}, model spec)`` of a trajectory file (validated)."""
    path = Path(path)
    if not path.is_file():
        raise TrajectoryError(f"trajectory file {path} does not exist")
    with h5py.File(path, "r") as f:
        _check(f, path)
        epochs = f["epochs"][()]
        params = {n: f["params"][n][()] for n in f["params"]}
        spec = json.loads(f.attrs.get("model", "{}"))
    for n, a in params.items():
        if a.shape[0] != len(epochs):
            raise TrajectoryError(f"{path}: params/{n} has {a.shape[0]} snapshots, epochs has {len(epochs)}")
    return epochs, params, spec
