"""Which values a figure draws: the surface's array for a key, optionally as log10."""

from __future__ import annotations

import numpy as np

from ..store import Surface

__all__ = ["default_key", "plotted_values"]


def plotted_values(surface: Surface, key: str, log: bool = False) -> np.ndarray:
    """``surface.values[key]`` (a copy; ``log``: log10 of the positive values, NaN elsewhere)."""
    if key not in surface.values:
        raise KeyError(f"{surface.path}: unknown value {key!r}")
    z = surface.values[key].copy()
    if not np.isfinite(z).any():
        raise ValueError(f"{surface.path}: '{key}' has no computed points (available: {surface.available()})")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log10(np.where(z > 0, z, np.nan))
    return z


def default_key(surface: Surface) -> str:
    """The loss a figure shows when no key is given: train, else test."""
    for key in ("train_loss", "test_loss"):
        if key in surface.available():
            return key
    raise ValueError(f"{surface.path}: no computed loss values")
