"""Where the landscape CLI writes: one rule for every command that writes about a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .custom import is_import_path

__all__ = ["default_out"]


def default_out(args: argparse.Namespace, kind: str, ndim: int) -> Path:
    """``runs/<run>/`` for a run's checkpoint, ``runs/landscapes/<stem>/`` for a loose one."""
    if args.name:
        folder = Path("runs") / args.name
    elif args.checkpoint:
        ck = Path(args.checkpoint).resolve()
        if ck.parent.name == "checkpoints":
            folder = ck.parent.parent
            folder = Path("runs") / folder.name if folder.parent.name != "runs" else folder
        else:
            folder = Path("runs") / "landscapes" / ck.stem
    elif is_import_path(args.model):
        module, _, attr = args.model.rpartition(":")
        stem = Path(module).stem if module.endswith(".py") else module.rpartition(".")[2]
        folder = Path("runs") / "landscapes" / f"{stem}_{attr}"
    else:
        folder = Path("runs") / args.model
    return folder / f"landscape_{kind}_{ndim}d.h5"
