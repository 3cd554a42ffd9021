"""Where configs and runs are: paths that work from the repository root and from ``notebooks/``."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path | None:
    """The source checkout holding this package (with ``pyproject.toml``), or None when installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    """``path`` as given when it exists (or is absolute), else relative to the repository root.

    Notebooks run with their own folder as working directory in JupyterLab and with the repository
    root under ``python -m bnext.ablate``; ``configs/...`` and ``runs/...`` work in both.
    """
    if path is None or str(path) == "":
        return None
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = repo_root()
    return root / p if root is not None else p


def runs_root() -> Path:
    """``<repo>/runs`` in a source checkout, else ``./runs``."""
    root = repo_root()
    return root / "runs" if root is not None else Path("runs")


def output_path(path: str | os.PathLike[str]) -> Path:
    """An output location: absolute as given; relative to the repository root when the kernel runs in
    the checkout's ``notebooks/`` folder (JupyterLab), else relative to the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    root = repo_root()
    if root is not None and Path.cwd().resolve() == (root / "notebooks").resolve():
        return root / p
    return Path.cwd() / p
