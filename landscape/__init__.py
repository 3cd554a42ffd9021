"""Loss landscapes of any ``torch.nn.Module`` (Li et al. 2018, "Visualizing the Loss Landscape of
Neural Nets"; the BNext paper's section 3.1, Fig. 1b, 2 and 6). Model-agnostic: only the CLI
(``python -m landscape``) imports ``bnext``.

Modules: :mod:`~landscape.directions` (random filter-normalized, interpolation, PCA, reference-tool
files), :mod:`~landscape.surface` (resumable and sharded compute, PCA grids that fit the
trajectory), :mod:`~landscape.engine` (the evaluation engine), :mod:`~landscape.grid` (grid specs,
coarse-to-fine order), :mod:`~landscape.bn` (BatchNorm recalibration / safe interpolation),
:mod:`~landscape.store` (the HDF5 schema), :mod:`~landscape.metrics` (roughness, convexity share,
basin width), :mod:`~landscape.plot` (figures, HTML), :mod:`~landscape.compare` (multi-panel
comparisons), :mod:`~landscape.vts` (ParaView export), :mod:`~landscape.style` (the one figure
style of the workbench), :mod:`~landscape.hessian` (Hessian-vector products, top eigenvalues, trace,
eigenvalue density), :mod:`~landscape.sharpness` (epsilon- and random-direction sharpness) and
:mod:`~landscape.eigmap` (max/min eigenvalue maps in surface files).

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

from .store import FORMAT, FORMAT_VERSION, Surface, SurfaceFileError, read_surface

__all__ = ["FORMAT", "FORMAT_VERSION", "Surface", "SurfaceFileError", "read_surface"]
