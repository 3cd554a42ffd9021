"""Where the landscape CLI writes: one rule for every command that writes about a model.

* ``--name NAME``: ``runs/NAME/``;
* a checkpoint inside a run (``<run>/checkpoints/<file>.pt``): that run's folder, ``<run>/`` (e.g.
  ``runs/demo/bnext18/`` for ``runs/demo/bnext18/checkpoints/best.pt``), wherever it is;
* a loose checkpoint ``<dir>/<stem>.pt``: ``runs/<stem>/``;
* ``--model NAME``: ``runs/NAME/``; ``--model path/my_model.py:build`` or ``pkg.mod:build``:
  ``runs/my_model_build/`` (never next to the user's source file).

Relative results are under the current folder's ``runs/``; every command prints what it wrote.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .custom import is_import_path

__all__ = ["default_out", "run_folder"]


def _safe(name: str) -> str:
    """A folder name from free text: letters, digits, ``._-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def run_folder(checkpoint: str | None = None, model: str | None = None, name: str | None = None) -> Path:
    """The folder results about this checkpoint or model go to (see the module's rule)."""
    if name:
        return Path("runs") / _safe(name)
    if checkpoint:
        ck = Path(checkpoint)
        if ck.parent.name == "checkpoints":
            return ck.parent.parent
        return Path("runs") / _safe(ck.stem)
    if model and is_import_path(model):
        module, _, attr = model.rpartition(":")
        stem = Path(module).stem if module.endswith(".py") else module.rpartition(".")[2]
        return Path("runs") / _safe(f"{stem}_{attr}")
    if model:
        return Path("runs") / _safe(model)
    raise ValueError("no checkpoint, model or name to place the results under")


def default_out(args: argparse.Namespace, kind: str, ndim: int) -> Path:
    """``<run folder>/landscape_<kind>_<ndim>d.h5`` (see :func:`run_folder`)."""
    folder = run_folder(getattr(args, "checkpoint", None), getattr(args, "model", None), getattr(args, "name", None))
    return folder / f"landscape_{kind}_{ndim}d.h5"
