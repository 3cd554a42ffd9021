"""Loss landscapes of any ``torch.nn.Module`` (Li et al. 2018, "Visualizing the Loss Landscape of
Neural Nets"; the BNext paper's section 3.1, Fig. 1b, 2 and 6). Model-agnostic: only the CLI
(``python -m landscape``) imports ``bnext``.

Layout: the file format and grids at the top (:mod:`~landscape.store`, :mod:`~landscape.grid`,
:mod:`~landscape.lock`, :mod:`~landscape.diskwrite`,
:mod:`~landscape.merge`), with :mod:`~landscape.directions` (random
filter-normalized, interpolation, planes through three models, PCA, reference-tool files),
:mod:`~landscape.objectives` (the loss and metrics a surface stores), :mod:`~landscape.bn` (BatchNorm
recalibration), :mod:`~landscape.surface` (resumable and sharded compute) and
:mod:`~landscape.metrics` (roughness, convexity share, basin width); then three sub-packages:
:mod:`landscape.engine` (evaluation and its fast paths), :mod:`landscape.curvature` (Hessian,
sharpness, eigenvalue maps) and :mod:`landscape.figures` (plots, comparisons, exports), and the CLI
in :mod:`landscape.cli`.

Surface file (HDF5, root attribute ``format="landscape-surface"``, ``format_version=2``):
``xcoordinates`` (nx,), ``ycoordinates`` (ny,) for 2D, ``train_loss``/``train_acc``/``test_loss``/
``test_acc`` of shape (nx,) or (ny, nx) with NaN where not computed, a ``done`` mask,
``directions/x/<param>`` and ``directions/y/<param>``, and root attributes for the settings (model
spec, checkpoint path and SHA-256, data spec, subset size, seed, normalization, ignore rule, BN
mode and calibration set, package version, ...). On disk ``train_loss[j, i]`` is the value at
``(xcoordinates[i], ycoordinates[j])`` (Li et al.'s reading convention); in memory
(:func:`read_surface`) ``values["train_loss"][i, j]`` is. See :mod:`landscape.store` and the README
("Loss landscapes").

Typical use::

    from landscape.directions import random_directions
    from landscape.surface import compute_surface
    d = random_directions(model, seed=0)                      # filter-normalized, BN/bias ignored
    compute_surface("runs/x/landscape.h5", model, d, {"train": (images, labels)}, "-1:1:21", "-1:1:21")
"""

import importlib
from typing import Any

from .store import FORMAT, FORMAT_VERSION, Surface, SurfaceFileError, read_surface

#: public names imported on first use (PEP 562), so ``import landscape`` stays light
_LAZY = {
    "compute_surface": ".surface",
    "random_directions": ".directions",
    "interpolation_direction": ".directions",
    "plane_directions": ".directions",
    "Directions": ".directions",
    "SurfaceEngine": ".engine",
    "TOLERANCE": ".engine",
    "Hessian": ".curvature.hessian",
    "block_curvature": ".curvature.blocks",
    "make_objectives": ".objectives",
    "surface_metrics": ".metrics",
    "plot_all": ".figures.plot",
    "compare": ".figures.compare",
}

__all__ = ["FORMAT", "FORMAT_VERSION", "Surface", "SurfaceFileError", "read_surface", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
