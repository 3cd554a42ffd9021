"""Curvature of the loss at a point or over a surface.

:mod:`.hessian` (Hessian-vector products, Lanczos eigenvalues, Hutchinson trace, eigenvalue
density), :mod:`.lanczos` (Lanczos with true residuals, deflated restarts and a bounded basis),
:mod:`.sharpness` (epsilon- and random-direction sharpness), :mod:`.eigmap` (max/min eigenvalue
maps stored in surface files, Li et al.'s Fig. 9) and :mod:`.blocks` (top eigenvalue and trace per
block, against depth).
"""
