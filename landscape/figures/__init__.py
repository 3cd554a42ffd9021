"""Figures from surface files (no model needed).

:mod:`.style` (the one figure style of the workbench), :mod:`.values` (which values a figure draws),
:mod:`.plot` (1D, contour, heatmap, 3D, plotly HTML), :mod:`.compare` (multi-panel comparisons with
shared levels) and :mod:`.vts` (ParaView export).
"""
