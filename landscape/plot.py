"""Figures from surface files (no model needed): 1D curves, contour lines (Fig. 2 style), filled
contours and heatmaps, 3D PNG (matplotlib, Agg, ``fig.add_subplot(projection="3d")``; the
reference tool's ``Axes3D(fig)`` renders blank with current matplotlib), interactive 3D HTML
(plotly, self-contained), static plotly PNG when kaleido is present, VTK ``.vts`` for ParaView, and
multi-panel comparisons with shared levels and colour scale (the paper's Fig. 2 a-g).

Matplotlib figures are built on ``matplotlib.figure.Figure`` objects rendered by Agg, so nothing
here changes the global pyplot backend (notebooks keep theirs).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from .metrics import compute_and_store
from .store import Surface, read_surface

KINDS = ("1d", "contour", "contourf", "heatmap", "3d", "html", "plotly_png", "vts")


def _figure(**kw: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(**kw)


def parse_levels(spec: str | None) -> np.ndarray | None:
    """``"vmin:vmax:step"`` (the reference tool's ``--vmin/--vmax/--vlevel``) into contour levels."""
    if spec is None:
        return None
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"levels {spec!r} must be 'vmin:vmax:step', e.g. '0:5:0.25'")
    try:
        lo, hi, step = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"levels {spec!r}: vmin, vmax and step must be numbers") from None
    if step <= 0 or hi <= lo:
        raise ValueError(f"levels {spec!r}: need vmin < vmax and a positive step")
    return np.arange(lo, hi + step / 2, step)


def _value(surface: Surface, key: str, log: bool = False) -> np.ndarray:
    if key not in surface.values:
        raise KeyError(f"{surface.path}: unknown value {key!r}")
    z = surface.values[key].copy()
    if not np.isfinite(z).any():
        raise ValueError(f"{surface.path}: '{key}' has no computed points (available: {surface.available()})")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(np.where(z > 0, z, np.nan))
    return z


def _label(key: str, log: bool) -> str:
    """Axis/colour-bar label of a plotted value (``log`` when the natural log is drawn)."""
    return f"log {key}" if log else key


def _default_key(surface: Surface) -> str:
    for key in ("train_loss", "test_loss"):
        if key in surface.available():
            return key
    raise ValueError(f"{surface.path}: no computed loss values")


def _auto_levels(values: Sequence[np.ndarray], n: int = 20) -> np.ndarray:
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-6
    return np.linspace(lo, hi, n + 1)


def _grid(surface: Surface) -> tuple[np.ndarray, np.ndarray]:
    """Meshgrid with ``'ij'`` indexing: ``X[i, j] = x[i]``, ``Y[i, j] = y[j]`` matching ``f[i, j]``."""
    return np.meshgrid(surface.xcoordinates, surface.ycoordinates, indexing="ij")


def _need_2d(surface: Surface, what: str) -> None:
    if surface.ndim != 2:
        raise ValueError(f"{surface.path}: {what} needs a 2D surface (this one is 1D; use the 1d plot)")


def _title(surface: Surface, key: str) -> str:
    return f"{surface.label}: {key}"


def plot_1d(surface: Surface, out: str | os.PathLike[str], *, log: bool = False) -> Path:
    """Loss (left axis, optionally log) and accuracy (right axis) along x, train and test."""
    out = Path(out)
    fig = _figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if surface.ndim == 2:  # the x axis through y=0
        j = int(np.argmin(np.abs(surface.ycoordinates)))
        values = {k: v[:, j] for k, v in surface.values.items()}
    else:
        values = surface.values
    x = surface.xcoordinates
    ax2 = ax.twinx()
    styles = {"train": "-", "test": "--"}
    for split in ("train", "test"):
        loss, acc = values[f"{split}_loss"], values[f"{split}_acc"]
        if np.isfinite(loss).any():
            ax.plot(x, loss, styles[split], color="tab:blue", label=f"{split} loss")
        if np.isfinite(acc).any():
            ax2.plot(x, acc, styles[split], color="tab:red", label=f"{split} accuracy")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("x (multiples of the direction)")
    ax.set_ylabel("loss", color="tab:blue")
    ax2.set_ylabel("accuracy (%)", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    ax.set_title(surface.label)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def _overlay(ax: Any, surface: Surface) -> None:
    ax.plot([0], [0], marker="*", color="k", markersize=8, linestyle="none")
    if surface.trajectory is not None:
        t = surface.trajectory
        ax.plot(t[:, 0], t[:, 1], "-o", color="tab:red", markersize=3, linewidth=1, label="trajectory")


def _plane(surface: Surface, key: str | None, log: bool, what: str, figsize: tuple[float, float]) -> tuple:
    """Common start of the 2D plots: ``(key, z, X, Y, fig, ax)``."""
    _need_2d(surface, what)
    key = key or _default_key(surface)
    z = _value(surface, key, log)
    X, Y = _grid(surface)
    fig = _figure(figsize=figsize)
    return key, z, X, Y, fig, fig.add_subplot()


def _save_plane(fig: Any, ax: Any, surface: Surface, key: str, out: str | os.PathLike[str]) -> Path:
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(_title(surface, key), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return Path(out)


def plot_contour(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    levels: np.ndarray | None = None,
    log: bool = False,
) -> Path:
    """Contour lines with labels (Li et al. Fig. 2 / the paper's Fig. 2 style)."""
    key, z, X, Y, fig, ax = _plane(surface, key, log, "a contour plot", (5.5, 5))
    cs = ax.contour(X, Y, z, levels=levels if levels is not None else _auto_levels([z]), cmap="summer")
    ax.clabel(cs, inline=True, fontsize=7, fmt="%.2f")
    _overlay(ax, surface)
    return _save_plane(fig, ax, surface, key, out)


def plot_contourf(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    levels: np.ndarray | None = None,
    log: bool = False,
) -> Path:
    """Filled contours with a colour bar."""
    key, z, X, Y, fig, ax = _plane(surface, key, log, "a filled contour plot", (6, 5))
    cs = ax.contourf(
        X, Y, z, levels=levels if levels is not None else _auto_levels([z]), cmap="viridis", extend="both"
    )
    fig.colorbar(cs, ax=ax, label=_label(key, log))
    _overlay(ax, surface)
    return _save_plane(fig, ax, surface, key, out)


def plot_heatmap(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    log: bool = False,
) -> Path:
    """Heatmap, one cell per grid point (NaN cells blank)."""
    key, z, X, Y, fig, ax = _plane(surface, key, log, "a heatmap", (6, 5))
    mesh = ax.pcolormesh(X, Y, z, shading="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(mesh, ax=ax, label=_label(key, log))
    return _save_plane(fig, ax, surface, key, out)


def plot_3d(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    log: bool = False,
    zmax: float | None = None,
) -> Path:
    """3D surface PNG via ``fig.add_subplot(projection="3d")`` (renders with current matplotlib)."""
    _need_2d(surface, "a 3D plot")
    key = key or _default_key(surface)
    z = _value(surface, key, log)
    if zmax is not None:
        z = np.minimum(z, zmax)
    X, Y = _grid(surface)
    fig = _figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(X, Y, np.ma.masked_invalid(z), cmap="coolwarm", linewidth=0, antialiased=True)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel(_label(key, log))
    ax.set_title(_title(surface, key), fontsize=9)
    fig.savefig(out, dpi=120)
    return Path(out)


def plotly_figure(surface: Surface, *, key: str | None = None, log: bool = False) -> Any:
    """A plotly 3D surface; plotly wants ``z[j][i]`` at ``(x[i], y[j])``, so ``z = f.T``."""
    import plotly.graph_objects as go

    _need_2d(surface, "a plotly surface")
    key = key or _default_key(surface)
    z = _value(surface, key, log)
    fig = go.Figure(
        go.Surface(
            x=surface.xcoordinates,
            y=surface.ycoordinates,
            z=z.T,
            colorscale="Viridis",
            colorbar={"title": _label(key, log)},
        )
    )
    fig.update_layout(
        title=_title(surface, key), scene={"xaxis_title": "x", "yaxis_title": "y", "zaxis_title": key}
    )
    return fig


def plot_html(
    surface: Surface, out: str | os.PathLike[str], *, key: str | None = None, log: bool = False
) -> Path:
    """Interactive, self-contained HTML (``include_plotlyjs=True``: opens offline)."""
    plotly_figure(surface, key=key, log=log).write_html(str(out), include_plotlyjs=True, full_html=True)
    return Path(out)


def plot_plotly_png(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    log: bool = False,
    fallback: str | os.PathLike[str] | None = None,
) -> Path:
    """Static plotly PNG when kaleido (and its browser) work; else a message and the matplotlib 3D PNG."""
    try:
        import kaleido  # noqa: F401

        plotly_figure(surface, key=key, log=log).write_image(str(out))
        return Path(out)
    except Exception as exc:  # noqa: BLE001 - missing kaleido, or kaleido without a browser
        reason = "kaleido is not installed" if isinstance(exc, ImportError) else f"kaleido failed ({exc})"
        fallback = (
            Path(fallback) if fallback is not None else Path(out).with_name(Path(out).stem + "_mpl.png")
        )
        if not fallback.exists():
            plot_3d(surface, fallback, key=key, log=log)
        print(
            f"static plotly PNG skipped: {reason} (pip install kaleido for it); "
            f"the matplotlib 3D PNG is at {fallback}"
        )
        return fallback


def write_vts(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    log: bool = False,
    zscale: float = 1.0,
) -> Path:
    """VTK XML StructuredGrid (ASCII ``.vts``) for ParaView: points ``(x, y, zscale*value)``.

    Points are ordered with x fastest (VTK's i index), so point ``i + nx*j`` is ``f[i, j]``; every
    computed value array is attached as point data. Pure Python, no ``vtk`` package needed.
    """
    out = Path(out)
    key = key or _default_key(surface)
    z = _value(surface, key, log) * zscale
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


def plot_all(
    path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    kinds: Sequence[str] | None = None,
    key: str | None = None,
    levels: np.ndarray | None = None,
    log: bool = False,
    delta: float | None = None,
) -> dict[str, Path]:
    """Write every applicable figure next to the file (or in ``out_dir``) and store its metrics.

    Names: ``<stem>_1d.png``, ``_contour.png``, ``_contourf.png``, ``_heatmap.png``, ``_3d.png``,
    ``_3d.html``, ``_plotly.png`` and ``<stem>.vts``. Returns ``{kind: path}``.
    """
    surface = read_surface(path)
    out_dir = Path(out_dir) if out_dir is not None else surface.path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = surface.path.stem
    if kinds is None:
        kinds = ["1d"] if surface.ndim == 1 else [k for k in KINDS if k != "1d"] + ["1d"]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown plot kinds {unknown}; choose from {KINDS}")
    key = key or _default_key(surface)
    written: dict[str, Path] = {}
    for kind in kinds:
        if kind == "1d":
            written[kind] = plot_1d(surface, out_dir / f"{stem}_1d.png", log=log)
        elif kind == "contour":
            written[kind] = plot_contour(
                surface, out_dir / f"{stem}_contour.png", key=key, levels=levels, log=log
            )
        elif kind == "contourf":
            written[kind] = plot_contourf(
                surface, out_dir / f"{stem}_contourf.png", key=key, levels=levels, log=log
            )
        elif kind == "heatmap":
            written[kind] = plot_heatmap(surface, out_dir / f"{stem}_heatmap.png", key=key, log=log)
        elif kind == "3d":
            written[kind] = plot_3d(surface, out_dir / f"{stem}_3d.png", key=key, log=log)
        elif kind == "html":
            written[kind] = plot_html(surface, out_dir / f"{stem}_3d.html", key=key, log=log)
        elif kind == "plotly_png":
            written[kind] = plot_plotly_png(
                surface, out_dir / f"{stem}_plotly.png", key=key, log=log, fallback=out_dir / f"{stem}_3d.png"
            )
        elif kind == "vts":
            written[kind] = write_vts(surface, out_dir / f"{stem}.vts", key=key, log=log)
    compute_and_store(surface.path, **({} if delta is None else {"delta": delta}))
    return written


METRIC_COLUMNS = (
    "label",
    "value",
    "min",
    "max",
    "roughness",
    "convexity_share",
    "basin_threshold",
    "basin_width_x",
    "basin_width_y",
    "basin_diameter",
    "basin_truncated",
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def compare(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    key: str = "train_loss",
    labels: Sequence[str] | None = None,
    levels: np.ndarray | None = None,
    log: bool = False,
    delta: float | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Multi-panel figure with shared levels and colour scale plus a metrics table.

    Writes ``out`` (PNG), ``out`` with ``.md`` (markdown table) and ``.csv``; metrics are also stored
    as attributes in each surface file. Returns ``(png path, table rows)``.
    """
    if not paths:
        raise ValueError("compare needs at least one surface file")
    surfaces = [read_surface(p) for p in paths]
    labels = list(labels) if labels else [s.label for s in surfaces]
    if len(labels) != len(surfaces):
        raise ValueError(f"{len(labels)} labels for {len(surfaces)} surfaces")
    dims = {s.ndim for s in surfaces}
    if len(dims) != 1:
        raise ValueError("compare needs surfaces of one dimensionality (all 1D or all 2D)")
    values = [_value(s, key, log) for s in surfaces]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = len(surfaces)
    if dims == {2}:
        lv = levels if levels is not None else _auto_levels(values)
        cols = min(n, 4)
        rows = math.ceil(n / cols)
        fig = _figure(figsize=(3.6 * cols + 1.0, 3.4 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        cs = None
        for k, (s, z, lab) in enumerate(zip(surfaces, values, labels)):
            ax = axes[k // cols][k % cols]
            X, Y = _grid(s)
            cs = ax.contourf(X, Y, z, levels=lv, cmap="viridis", extend="both")
            ax.contour(X, Y, z, levels=lv, colors="k", linewidths=0.3)
            _overlay(ax, s)
            ax.set_title(lab, fontsize=9)
            ax.set_aspect("equal", adjustable="box")
        for k in range(n, rows * cols):
            axes[k // cols][k % cols].set_visible(False)
        fig.colorbar(cs, ax=axes.ravel().tolist(), label=_label(key, log), shrink=0.9)
    else:
        fig = _figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        for s, z, lab in zip(surfaces, values, labels):
            ax.plot(s.xcoordinates, z, label=lab)
        if levels is not None:
            ax.set_ylim(levels[0], levels[-1])
        ax.set_xlabel("x")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.savefig(out, dpi=120)
    rows_out = []
    for s, lab in zip(surfaces, labels):
        m = compute_and_store(s.path, [key], **({} if delta is None else {"delta": delta}))[key]
        rows_out.append({"label": lab, **m})
    md = ["| " + " | ".join(METRIC_COLUMNS) + " |", "|" + "---|" * len(METRIC_COLUMNS)]
    md += ["| " + " | ".join(_fmt(r.get(c)) for c in METRIC_COLUMNS) + " |" for r in rows_out]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows_out)
    return out, rows_out


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of :func:`compare` rows for the terminal."""
    cols = list(METRIC_COLUMNS)
    cells = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)
