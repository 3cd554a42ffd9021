"""Figures from surface files (no model needed): 1D curves, contour lines (Fig. 2 style), filled
contours and heatmaps, 3D surfaces (matplotlib, ``fig.add_subplot(projection="3d")``; the reference
tool's ``Axes3D(fig)`` renders blank with current matplotlib), interactive 3D HTML (plotly,
self-contained), static plotly PNG when kaleido is present and VTK ``.vts`` for ParaView. The
multi-panel comparison (the paper's Fig. 2 a-g) is in :mod:`landscape.figures.compare`.

Every figure follows :mod:`landscape.figures.style`: the title names the model and the quantity ("BNext-18
(Info-RCP + ELM) - train loss (log10)"), the axes say what the directions are ("direction 1
(filter-normalized)", "PC1 (87.3%)"), contour levels and colour-bar ticks fall on round numbers,
every 2D and 3D figure has a colour bar, the projected training trajectory of a PCA surface is
drawn on every 2D figure, and each figure is saved in the requested formats (PNG + PDF by default,
fonts embedded). ``log`` draws ``log10`` of the value.

A partial surface (computation interrupted or still running) is drawn at the resolution it has:
points are computed coarse to fine (:mod:`landscape.grid`), so the finest complete level is a
regular sub-grid; :func:`drawable` selects it and the figures say so in their title.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..grid import complete_level, level_indices
from ..lock import SurfaceLockedError
from ..metrics import DEFAULT_DELTA, surface_metrics
from ..store import Surface, SurfaceWriteError, read_surface, write_metrics
from . import style
from .values import default_key as _default_key
from .values import plotted_values
from .vts import write_vts

KINDS = ("1d", "contour", "contourf", "heatmap", "3d", "html", "plotly_png", "vts")
MATPLOTLIB_KINDS = ("1d", "contour", "contourf", "heatmap", "3d")

__all__ = [
    "KINDS", "drawable", "label_axes3d", "parse_levels", "parse_range", "plot_1d", "plot_3d", "plot_all",
    "partial_note", "plot_contour",
    "plot_contourf", "plot_heatmap", "plot_html", "plot_plotly_png", "plotly_figure", "plotted_values",
    "store_metrics", "surface_axis_labels", "surface_name",
    "surface_title", "write_vts", "written_files",
]


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


def parse_range(spec: str | None, name: str = "--zlim") -> tuple[float, float] | None:
    """``"lo:hi"`` into ``(lo, hi)`` with ``lo < hi`` (the 3D z range)."""
    if spec is None:
        return None
    parts = spec.split(":")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{name} {spec!r} must be 'lo:hi' with two numbers, e.g. '0:5'") from None
    if not hi > lo:
        raise ValueError(f"{name} {spec!r}: need lo < hi")
    return lo, hi


# ----------------------------------------------------------------------------- grids
def _grid(surface: Surface) -> tuple[np.ndarray, np.ndarray]:
    """Meshgrid with ``'ij'`` indexing: ``X[i, j] = x[i]``, ``Y[i, j] = y[j]`` matching ``f[i, j]``."""
    return np.meshgrid(surface.xcoordinates, surface.ycoordinates, indexing="ij")


def _need_2d(surface: Surface, what: str) -> None:
    if surface.ndim != 2:
        raise ValueError(f"{surface.path}: {what} needs a 2D surface (this one is 1D; use the 1d plot)")


def drawable(surface: Surface) -> tuple[Surface, str | None]:
    """The part of ``surface`` that can be drawn and a note when it is not the whole grid.

    A complete surface comes back unchanged with ``None``. A partial one is cut to its finest
    complete coarse-to-fine level (every ``s``-th point of each axis); with no complete level (a
    file filled in another order) the whole grid is drawn with the missing points left blank.
    """
    done = surface.done
    if done.all():
        return surface, None
    shape = "\u00d7".join(str(n) for n in done.shape)
    if not done.any():
        raise ValueError(f"{surface.path}: no point computed yet (0 of {done.size}); run or resume the compute "
                         "command first")
    s = complete_level(done)
    if s is None:
        note = (f"partial: {int(done.sum())} of {done.size} points computed and no complete coarse level; "
                f"drawn on the {shape} grid with the missing points left blank")
        return dataclasses.replace(surface, attrs={**surface.attrs, "_full_shape": shape}), note
    idx = [level_indices(n, s) for n in done.shape]
    sub = np.ix_(*idx)
    part = dataclasses.replace(
        surface,
        xcoordinates=surface.xcoordinates[idx[0]],
        ycoordinates=None if surface.ycoordinates is None else surface.ycoordinates[idx[1]],
        values={k: v[sub] for k, v in surface.values.items()},
        done=done[sub],
        attrs={**surface.attrs, "_full_shape": shape},  # titles say "partial"
    )
    drawn = "\u00d7".join(str(len(i)) for i in idx)
    note = (f"partial: {int(done.sum())} of {done.size} points computed; drawn at the complete {drawn} "
            f"sub-grid of the {shape} grid (every {s} grid steps)")
    return part, note


def _spec(surface: Surface) -> Any:
    spec = surface.settings.get("model", surface.attrs.get("model"))
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            pass
    return spec


def surface_name(surface: Surface) -> str:
    """The model's display name from the file's metadata ("BNext-18 (Info-RCP + ELM)"); without
    metadata, the run folder's name (or the file's stem)."""
    return style.model_display_name(_spec(surface)) or surface.path.parent.name or surface.path.stem


def quantity_label(surface: Surface, key: str, log: bool = False) -> str:
    """What ``key`` is on this surface: the loss and metrics named by :mod:`landscape.objectives`
    (``"train MSE loss"``, ``"test top-5 accuracy (%)"``), else :func:`landscape.figures.style.quantity_label`."""
    from ..objectives import value_label

    text = value_label(key, surface.settings)
    if text is None:
        return style.quantity_label(key, log)
    return f"{text} (log10)" if log else text


def surface_title(surface: Surface, key: str | None, log: bool = False) -> str:
    """``"<model display name> - <quantity (scale)>"`` (just the name without ``key``), plus
    ``(partial ...)`` for a surface cut by :func:`drawable`."""
    title = surface_name(surface)
    if key:
        title += f" \u2014 {quantity_label(surface, key, log)}"
    return title + partial_note(surface)


def partial_note(surface: Surface) -> str:
    """``"\n(partial: 6×6 sub-grid of 11×11)"`` (or ``"... 36 of 81 points"``) for a surface cut by
    :func:`drawable`; empty for a complete one."""
    full = surface.attrs.get("_full_shape")
    if not full:
        return ""
    drawn = "\u00d7".join(map(str, surface.shape))
    if drawn != full:
        return f"\n(partial: {drawn} sub-grid of {full})"
    return f"\n(partial: {int(surface.done.sum())} of {surface.done.size} points)"


def surface_axis_labels(surface: Surface) -> tuple[str, str]:
    """What the axes are: ``"direction 1 (filter-normalized)"``, ``"PC1 (87.3%)"``, ..."""
    kind = surface.settings.get("direction_kind") or surface.direction_info.get("kind")
    info = {**surface.direction_info}
    info.setdefault("normalization", surface.settings.get("normalization"))
    return style.axis_labels(kind, info)


# ----------------------------------------------------------------------------- matplotlib figures
def resolve_log(surface: Surface, key: str, log: bool | None) -> bool:
    """``log`` as given, or (None) whether ``key``'s values span more than two decades."""
    return bool(log) if log is not None else style.spans_decades(surface.values[key])


def _interpolation_marks(ax: Any, surface: Surface, x: np.ndarray) -> None:
    """A at x=0, B at x=1, the extrapolated parts (x < 0, x > 1) shaded (interpolation surfaces)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    for end, lim in ((0.0, lo), (1.0, hi)):
        if (end == 0.0 and lo < 0.0) or (end == 1.0 and hi > 1.0):
            ax.axvspan(min(end, lim), max(end, lim), color="0.9", zorder=0, lw=0)
    for pos, name in ((0.0, "A"), (1.0, "B")):
        if lo <= pos <= hi:
            ax.axvline(pos, color="0.35", lw=0.8, ls=":", zorder=1)
            ax.annotate(name, (pos, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontweight="bold")
    if lo < 0.0 or hi > 1.0:
        from matplotlib.patches import Patch

        ax._extrapolated = Patch(color="0.9", label="extrapolated")  # picked up by the legend


def plot_1d(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    log: bool | None = None,
    formats: Sequence[str] | None = None,
    dpi: int = style.DEFAULT_DPI,
    width: float | None = None,
) -> Path:
    """Loss (left axis; log when it spans more than two decades, or as ``log`` says) and accuracy
    (right axis) along x, train and test; interpolation surfaces mark A, B and the extrapolated parts."""
    with style.context():
        fig = style.figure(figsize=(6, 4), layout="constrained", width=width)
        ax = fig.add_subplot()
        if surface.ndim == 2:  # the x axis through y=0
            j = int(np.argmin(np.abs(surface.ycoordinates)))
            values = {k: v[:, j] for k, v in surface.values.items()}
        else:
            values = surface.values
        x = surface.xcoordinates
        losses = [values[k] for k in ("train_loss", "test_loss") if k in values and np.isfinite(values[k]).any()]
        log = bool(log) if log is not None else style.spans_decades(losses)
        interpolation = (surface.settings.get("direction_kind") or surface.direction_info.get("kind")) == "interpolate"
        if interpolation:
            _interpolation_marks(ax, surface, x)
        ax2 = ax.twinx()
        styles = {"train": "-", "test": "--"}
        for split in ("train", "test"):
            loss, acc = values[f"{split}_loss"], values[f"{split}_acc"]
            if np.isfinite(loss).any():
                ax.plot(x, loss, styles[split], color="tab:blue", label=quantity_label(surface, f"{split}_loss"))
            if np.isfinite(acc).any():
                ax2.plot(x, acc, styles[split], color="tab:red", label=f"{split} accuracy")
        if log:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        xl, yl = surface_axis_labels(surface)
        ax.set_xlabel(xl)
        ax.set_ylabel("loss (log scale)" if log else "loss", color="tab:blue")
        ax2.set_ylabel("accuracy (%)", color="tab:red")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        extra = getattr(ax, "_extrapolated", None)
        if extra is not None:
            h2, l2 = [*h2, extra], [*l2, "extrapolated"]
        # below the axes: a legend inside would cover the curves (the accuracy line above all)
        fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncols=min(3, len(h1 + h2)), frameon=False)
        where = f"\nslice at {yl} = 0" if surface.ndim == 2 else ""
        ax.set_title(surface_title(surface, None) + where)
        return style.save(fig, out, formats, dpi)


def _overlay(ax: Any, surface: Surface) -> None:
    """The model (origin, star), the three models of a plane (A, B, C) and, for PCA surfaces, the projected
    training trajectory."""
    anchors = surface.direction_info.get("anchors")
    if isinstance(anchors, dict) and anchors:
        for name, (ax_, ay_) in anchors.items():
            ax.plot([ax_], [ay_], marker="*", color="k", markersize=9, linestyle="none", zorder=5)
            ax.annotate(name, (ax_, ay_), textcoords="offset points", xytext=(5, 4), fontsize=9, zorder=6)
        ax.plot([], [], marker="*", color="k", linestyle="none", label="models A, B, C")
    else:
        ax.plot([0], [0], marker="*", color="k", markersize=9, linestyle="none", label="model", zorder=5)
    if surface.trajectory is not None:
        t = surface.trajectory
        ax.plot(t[:, 0], t[:, 1], "-o", color="tab:red", markersize=3, linewidth=1, label="training trajectory",
                zorder=4)
        ax.plot(t[:1, 0], t[:1, 1], "o", color="tab:red", markersize=6, mfc="white", label="start", zorder=5)
        steps = surface.direction_info.get("trajectory_steps")
        names = ([f"{v:g}" for v in steps] if steps is not None and len(steps) == len(t)
                 else [str(i) for i in range(len(t))])
        every = max(1, int(np.ceil(len(t) / 6)))  # about six labels, the first and the last always
        for i, (px, py) in enumerate(t):
            if i % every == 0 or i == len(t) - 1:
                ax.annotate(f"{'epoch ' if i == 0 and steps is not None else ''}{names[i]}", (px, py),
                            xytext=(3, 3), textcoords="offset points", fontsize=7, color="tab:red", zorder=6)
    ax.legend(loc="best", fontsize=7, frameon=True, framealpha=0.8)


def _plane(surface: Surface, key: str | None, log: bool | None, what: str, figsize: tuple[float, float],
           width: float | None = None) -> tuple:
    """Common start of the 2D plots: ``(key, log, z, X, Y, fig, ax)`` (``log`` resolved, see :func:`resolve_log`)."""
    _need_2d(surface, what)
    key = key or _default_key(surface)
    log = resolve_log(surface, key, log)
    z = plotted_values(surface, key, log)
    X, Y = _grid(surface)
    fig = style.figure(figsize=figsize, layout="constrained", width=width)
    return key, log, z, X, Y, fig, fig.add_subplot()


def _finish_plane(fig: Any, ax: Any, surface: Surface, key: str, log: bool, out: str | os.PathLike[str],
                  formats: Sequence[str] | None, dpi: int) -> Path:
    xl, yl = surface_axis_labels(surface)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_aspect("equal", adjustable="box")
    ax.xaxis.set_major_locator(style.nice_locator(6))
    ax.yaxis.set_major_locator(style.nice_locator(6))
    ax.set_title(surface_title(surface, key, log))
    return style.save(fig, out, formats, dpi)


def _levels(z: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    return levels if levels is not None else style.nice_levels(z)


def plot_contour(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    levels: np.ndarray | None = None,
    log: bool | None = None,
    formats: Sequence[str] | None = None,
    dpi: int = style.DEFAULT_DPI,
    width: float | None = None,
) -> Path:
    """Contour lines with labels and a colour bar (Li et al. Fig. 2 / the paper's Fig. 2 style)."""
    with style.context():
        key, log, z, X, Y, fig, ax = _plane(surface, key, log, "a contour plot", (5.6, 4.8), width)
        lv = _levels(z, levels)
        cs = ax.contour(X, Y, z, levels=lv, cmap="viridis", linewidths=1.0)
        ax.clabel(cs, cs.levels[::2], inline=True, fontsize=7, fmt=_level_format(lv))
        style.nice_colorbar(fig, cs, ax=ax, label=quantity_label(surface, key, log), shrink=0.9, ticks=cs.levels)
        _overlay(ax, surface)
        return _finish_plane(fig, ax, surface, key, log, out, formats, dpi)


def _level_format(levels: np.ndarray) -> str:
    """Fewest decimals that write every (round) level exactly: 7.5 stays 7.5, 8.0 prints 8."""
    for digits in range(0, 7):
        if all(abs(round(float(v), digits) - float(v)) <= 1e-9 * max(1.0, abs(float(v))) for v in levels):
            return f"%.{digits}f"
    return "%.3g"


def plot_contourf(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    levels: np.ndarray | None = None,
    log: bool | None = None,
    formats: Sequence[str] | None = None,
    dpi: int = style.DEFAULT_DPI,
    width: float | None = None,
) -> Path:
    """Filled contours with a colour bar."""
    with style.context():
        key, log, z, X, Y, fig, ax = _plane(surface, key, log, "a filled contour plot", (5.8, 4.8), width)
        lv = _levels(z, levels)
        cs = ax.contourf(X, Y, z, levels=lv, cmap="viridis", extend="both" if levels is not None else "neither")
        ax.contour(X, Y, z, levels=lv, colors="k", linewidths=0.3, alpha=0.6)
        style.nice_colorbar(fig, cs, ax=ax, label=quantity_label(surface, key, log), shrink=0.9)
        _overlay(ax, surface)
        return _finish_plane(fig, ax, surface, key, log, out, formats, dpi)


def plot_heatmap(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    log: bool | None = None,
    formats: Sequence[str] | None = None,
    dpi: int = style.DEFAULT_DPI,
    width: float | None = None,
) -> Path:
    """Heatmap, one cell per grid point (NaN cells blank)."""
    with style.context():
        key, log, z, X, Y, fig, ax = _plane(surface, key, log, "a heatmap", (5.8, 4.8), width)
        mesh = ax.pcolormesh(X, Y, z, shading="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
        style.nice_colorbar(fig, mesh, ax=ax, label=quantity_label(surface, key, log), shrink=0.9)
        _overlay(ax, surface)
        return _finish_plane(fig, ax, surface, key, log, out, formats, dpi)


def plot_3d(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    log: bool | None = None,
    zlim: tuple[float, float] | None = None,
    elev: float = 30.0,
    azim: float = -60.0,
    formats: Sequence[str] | None = None,
    dpi: int = style.DEFAULT_DPI,
    width: float | None = None,
) -> Path:
    """3D surface with a colour bar; ``zlim`` clips the values to ``(lo, hi)`` and fixes the z axis,
    ``elev``/``azim`` set the view (degrees, matplotlib's convention)."""
    _need_2d(surface, "a 3D plot")
    key = key or _default_key(surface)
    log = resolve_log(surface, key, log)
    z = plotted_values(surface, key, log)
    if zlim is not None:
        z = np.clip(z, *zlim)
    X, Y = _grid(surface)
    with style.context():
        fig = style.figure(figsize=(6.4, 5.0), width=width)
        ax = fig.add_axes((0.0, 0.0, 0.84, 0.92), projection="3d")
        surf = ax.plot_surface(X, Y, np.ma.masked_invalid(z), cmap="viridis", linewidth=0, antialiased=True,
                               rcount=200, ccount=200, vmin=float(np.nanmin(z)), vmax=float(np.nanmax(z)))
        if zlim is not None:
            ax.set_zlim(*zlim)
        xl, yl = surface_axis_labels(surface)
        label_axes3d(ax, xl, yl, quantity_label(surface, key, log))
        ax.view_init(elev=elev, azim=azim)
        style.nice_colorbar(fig, surf, cax=fig.add_axes((0.86, 0.22, 0.025, 0.56)),
                            label=quantity_label(surface, key, log))
        fig.suptitle(surface_title(surface, key, log), y=0.97)
        return style.save(fig, out, formats, dpi)


def label_axes3d(ax: Any, xlabel: str, ylabel: str, zlabel: str, *, small: bool = False) -> None:
    """Few round ticks per axis and labels that clear them (no overlapping tick labels)."""
    size = 6 if small else 7
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(style.nice_locator(5))
    ax.tick_params(labelsize=size, pad=0)
    ax.set_xlabel(xlabel, fontsize=size + 1, labelpad=2)
    ax.set_ylabel(ylabel, fontsize=size + 1, labelpad=2)
    ax.set_zlabel(zlabel, fontsize=size + 1, labelpad=4)


# ----------------------------------------------------------------------------- plotly
def plotly_figure(surface: Surface, *, key: str | None = None, log: bool | None = None, elev: float = 30.0,
                  azim: float = -60.0) -> Any:
    """A plotly 3D surface; plotly wants ``z[j][i]`` at ``(x[i], y[j])``, so ``z = f.T``. The camera
    starts at matplotlib's ``elev``/``azim`` view, so the HTML opens looking like the 3D PNG."""
    import plotly.graph_objects as go

    _need_2d(surface, "a plotly surface")
    key = key or _default_key(surface)
    log = resolve_log(surface, key, log)
    z = plotted_values(surface, key, log)
    quantity = quantity_label(surface, key, log)
    xl, yl = surface_axis_labels(surface)
    fig = go.Figure(
        go.Surface(
            x=surface.xcoordinates,
            y=surface.ycoordinates,
            z=z.T,
            colorscale="Viridis",
            colorbar={"title": {"text": quantity, "side": "right"}},
            hovertemplate=f"{xl}: %{{x:.3g}}<br>{yl}: %{{y:.3g}}<br>{quantity}: %{{z:.4g}}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": surface_title(surface, key, log).replace("\n", "<br>"), "x": 0.5},
        font={"family": "DejaVu Sans, Arial, sans-serif", "size": 13},
        scene={"xaxis_title": xl, "yaxis_title": yl, "zaxis_title": quantity,
               "aspectmode": "manual", "aspectratio": {"x": 1, "y": 1, "z": 0.7},
               "camera": {"eye": _eye(elev, azim)}},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def _eye(elev: float, azim: float, distance: float = 2.2) -> dict[str, float]:
    e, a = np.radians(elev), np.radians(azim)
    return {"x": float(distance * np.cos(e) * np.cos(a)), "y": float(distance * np.cos(e) * np.sin(a)),
            "z": float(distance * np.sin(e))}


def plot_html(
    surface: Surface, out: str | os.PathLike[str], *, key: str | None = None, log: bool | None = None,
    elev: float = 30.0, azim: float = -60.0,
) -> Path:
    """Interactive, self-contained HTML (``include_plotlyjs=True``: plotly.js embedded, opens offline)."""
    fig = plotly_figure(surface, key=key, log=log, elev=elev, azim=azim)
    fig.write_html(str(out), include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return Path(out)


def plot_plotly_png(
    surface: Surface,
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    log: bool | None = None,
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


# ----------------------------------------------------------------------------- everything at once
def plot_all(
    path: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    kinds: Sequence[str] | None = None,
    key: str | None = None,
    levels: np.ndarray | None = None,
    log: bool | None = None,
    delta: float | None = None,
    formats: Sequence[str] | None = style.DEFAULT_FORMATS,
    dpi: int = style.DEFAULT_DPI,
    zlim: tuple[float, float] | None = None,
    elev: float = 30.0,
    azim: float = -60.0,
    width: float | None = None,
) -> dict[str, Path]:
    """Write every applicable figure next to the file (or in ``out_dir``) and store its metrics.

    Names carry the plotted value: ``<stem>_1d`` (all losses and accuracies), ``<stem>_<key>_contour``,
    ``_contourf``, ``_heatmap``, ``_3d`` (each ``.png`` and ``.pdf`` by default, see ``formats``),
    ``_3d.html``, ``_plotly.png`` and ``<stem>_<key>.vts``, so figures of another key never overwrite
    them. ``log=None`` draws log10 where the values span more than two decades. A
    partial surface is drawn on its complete sub-grid (:func:`drawable`; a line says so) and its
    metrics are computed there. Returns ``{kind: first file}``.
    """
    full = read_surface(path)
    surface, note = drawable(full)
    if note:
        print(f"{full.path}: {note}")
    out_dir = Path(out_dir) if out_dir is not None else full.path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = full.path.stem
    if kinds is None:
        kinds = ["1d"] if surface.ndim == 1 else [k for k in KINDS if k != "1d"] + ["1d"]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown plot kinds {unknown}; choose from {KINDS}")
    key = key or _default_key(surface)
    out_kw = {"formats": formats, "dpi": dpi}
    written: dict[str, Path] = {}
    named = f"{stem}_{key}"  # the value key in every file name of a value plot
    for kind in kinds:
        base = out_dir / f"{named}_{kind}.png"
        if kind == "1d":
            written[kind] = plot_1d(surface, out_dir / f"{stem}_1d.png", log=log, width=width, **out_kw)
        elif kind == "contour":
            written[kind] = plot_contour(surface, base, key=key, levels=levels, log=log, width=width, **out_kw)
        elif kind == "contourf":
            written[kind] = plot_contourf(surface, base, key=key, levels=levels, log=log, width=width, **out_kw)
        elif kind == "heatmap":
            written[kind] = plot_heatmap(surface, base, key=key, log=log, width=width, **out_kw)
        elif kind == "3d":
            written[kind] = plot_3d(surface, base, key=key, log=log, zlim=zlim, elev=elev, azim=azim, width=width,
                                    **out_kw)
        elif kind == "html":
            written[kind] = plot_html(surface, out_dir / f"{named}_3d.html", key=key, log=log, elev=elev, azim=azim)
        elif kind == "plotly_png":
            written[kind] = plot_plotly_png(
                surface, out_dir / f"{named}_plotly.png", key=key, log=log, fallback=out_dir / f"{named}_3d.png"
            )
        elif kind == "vts":
            written[kind] = write_vts(surface, out_dir / f"{named}.vts", key=key, log=resolve_log(surface, key, log))
    store_metrics(full.path, surface, delta=DEFAULT_DELTA if delta is None else delta)
    return written


def store_metrics(path: str | os.PathLike[str], surface: Surface, *, delta: float = DEFAULT_DELTA,
                  keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Metrics of the loss arrays of (the drawn part of) a surface, written back into ``path``."""
    keys = keys or [k for k in ("train_loss", "test_loss") if k in surface.available()]
    result = {}
    for key in keys:
        m = surface_metrics(surface, key, delta=delta)
        if surface.attrs.get("_full_shape"):
            m["partial_grid"] = "\u00d7".join(map(str, surface.shape))
        try:
            write_metrics(path, key, m)
        except (SurfaceLockedError, SurfaceWriteError, OSError) as exc:  # being computed, read-only or full disk:
            # the figures are drawn, the metrics are not stored
            print(f"note: metrics not stored: {exc}", file=sys.stderr)
            return result
        result[key] = m
    return result


def written_files(written: dict[str, Path], formats: Sequence[str] | None = style.DEFAULT_FORMATS) -> list[Path]:
    """Every file behind :func:`plot_all`'s ``{kind: first file}`` (all formats of the matplotlib ones)."""
    files: list[Path] = []
    for kind, path in written.items():
        if kind in MATPLOTLIB_KINDS and path.suffix == ".png" and path.stem.endswith(f"_{kind}"):
            files += [p for p in style.outputs(path, formats) if p.exists()]
        else:
            files.append(path)
    return list(dict.fromkeys(files))  # the plotly PNG's fallback is the 3D PNG: once
