"""VTK XML StructuredGrid (``.vts``) export of a surface for ParaView (pure Python, no ``vtk``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from ..store import Surface
from .values import default_key, plotted_values


def write_vts(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    log: bool = False,
    zscale: float = 1.0,
) -> Path:
    """ASCII ``.vts`` with points ``(x, y, zscale * value)`` (``log``: ``log10`` of the value).

    Points are ordered with x fastest (VTK's i index), so point ``i + nx*j`` is ``f[i, j]``; every
    computed value array is attached as point data.
    """
    out = Path(out)
    key = key or default_key(surface)
    z = plotted_values(surface, key, log) * zscale
    x = surface.xcoordinates
    y = surface.ycoordinates if surface.ndim == 2 else np.zeros(1)
    nx, ny = len(x), len(y)
    z2 = z.reshape(nx, ny)

    def fmt(v: float) -> str:
        return repr(float(v)) if math.isfinite(v) else "nan"

    extent = f"0 {nx - 1} 0 {ny - 1} 0 0"
    lines = [
        '<?xml version="1.0"?>',
        '<VTKFile type="StructuredGrid" version="0.1" byte_order="LittleEndian">',
        f'  <StructuredGrid WholeExtent="{extent}">',
        f'    <Piece Extent="{extent}">',
        f'      <PointData Scalars="{escape(key)}">',
    ]
    for name in surface.available():
        vals = surface.values[name].reshape(nx, ny)
        lines.append(f'        <DataArray type="Float64" Name="{escape(name)}" format="ascii">')
        lines.append(" ".join(fmt(vals[i, j]) for j in range(ny) for i in range(nx)))
        lines.append("        </DataArray>")
    lines += [
        "      </PointData>",
        "      <Points>",
        '        <DataArray type="Float64" NumberOfComponents="3" format="ascii">',
    ]
    lines.append(" ".join(f"{fmt(x[i])} {fmt(y[j])} {fmt(z2[i, j])}" for j in range(ny) for i in range(nx)))
    lines += [
        "        </DataArray>",
        "      </Points>",
        "    </Piece>",
        "  </StructuredGrid>",
        "</VTKFile>",
        "",
    ]
    out.write_text("\n".join(lines))
    return out
