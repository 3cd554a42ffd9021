"""Several surfaces side by side (the paper's Fig. 2 a-g): shared contour levels and colour scale,
panel letters, axis labels, the model names as panel titles, and a metrics table (``.md``/``.csv``).

The output is named after the inputs (:func:`default_output`) so that comparing other surfaces
never overwrites an earlier comparison.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import DEFAULT_DELTA
from ..store import read_surface
from . import style
from .plot import (
    _grid,
    _overlay,
    drawable,
    partial_note,
    plotted_values,
    store_metrics,
    surface_axis_labels,
    surface_name,
)

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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "surface"


def default_output(paths: Sequence[str | os.PathLike[str]], key: str = "train_loss",
                   root: str | os.PathLike[str] = Path("runs") / "compare") -> Path:
    """``<root>/<a>_vs_<b>..._<key>.png`` named after the inputs: their file stems, or their run
    folders when the stems are alike (``runs/a/landscape.h5`` -> ``a``); long lists are shortened
    to the first two names, the count and a hash of all paths."""
    paths = [Path(p) for p in paths]
    names = [_slug(n) for n in short_names(paths)]
    joined = "_vs_".join(names)
    if len(joined) > 80:
        digest = hashlib.sha1("\n".join(str(p.resolve()) for p in paths).encode()).hexdigest()[:8]
        joined = f"{'_vs_'.join(names[:2])}_and_{len(names) - 2}_more_{digest}"
    return Path(root) / f"{joined}_{key}.png"


def short_names(paths: Sequence[Path]) -> list[str]:
    """A short distinct name per file: its stem, or its folder where stems repeat
    (``runs/a/landscape.h5`` -> ``a``), or both where that still repeats."""
    paths = [Path(p).resolve() for p in paths]

    def repeated(names: list[str], k: int) -> bool:
        return names.count(names[k]) > 1

    stems = [p.stem for p in paths]
    names = [p.parent.name if repeated(stems, k) else stems[k] for k, p in enumerate(paths)]
    return [f"{p.parent.name}-{p.stem}" if repeated(names, k) else names[k] for k, p in enumerate(paths)]


def _labels(surfaces: Sequence[Any]) -> list[str]:
    labels = [surface_name(s) for s in surfaces]
    short = short_names([s.path for s in surfaces])
    # the same model twice: say which file
    return [f"{lab} ({short[k]})" if labels.count(lab) > 1 else lab for k, lab in enumerate(labels)]


def compare(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    key: str = "train_loss",
    labels: Sequence[str] | None = None,
    levels: np.ndarray | None = None,
    log: bool | None = None,
    delta: float | None = None,
    formats: Sequence[str] | None = style.DEFAULT_FORMATS,
    dpi: int = style.DEFAULT_DPI,
    width: float | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Multi-panel figure with shared levels and colour scale plus a metrics table.

    ``log=None``: log10 when the panels' values together span more than two decades; ``width``:
    the printed width in inches (e.g. 7.0 for a double column), fonts then at their size on paper.

    Writes ``out`` (in each of ``formats``), and next to it ``.md`` (Markdown table) and ``.csv``;
    metrics are also stored as attributes in each surface file. Partial surfaces are drawn (and
    measured) on their complete sub-grid. Returns ``(first figure file, table rows)``.
    """
    if not paths:
        raise ValueError("compare needs at least one surface file")
    surfaces = []
    for p in paths:
        s, note = drawable(read_surface(p))
        if note:
            print(f"{p}: {note}")
        surfaces.append(s)
    labels = list(labels) if labels else _labels(surfaces)
    if len(labels) != len(surfaces):
        raise ValueError(f"{len(labels)} labels for {len(surfaces)} surfaces")
    dims = {s.ndim for s in surfaces}
    if len(dims) != 1:
        raise ValueError("compare needs surfaces of one dimensionality (all 1D or all 2D)")
    if log is None:
        log = style.spans_decades([plotted_values(s, key, False) for s in surfaces])
    values = [plotted_values(s, key, log) for s in surfaces]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantity = style.quantity_label(key, log)
    with style.context():
        fig = _panels_2d(surfaces, values, labels, levels, quantity, width) if dims == {2} else \
            _lines_1d(surfaces, values, labels, levels, quantity, width)
        first = style.save(fig, out, formats, dpi)
    rows_out = []
    for s, lab in zip(surfaces, labels):
        m = store_metrics(s.path, s, keys=[key], delta=DEFAULT_DELTA if delta is None else delta)[key]
        rows_out.append({"label": lab, **m})
    md = ["| " + " | ".join(METRIC_COLUMNS) + " |", "|" + "---|" * len(METRIC_COLUMNS)]
    md += ["| " + " | ".join(_fmt(r.get(c)) for c in METRIC_COLUMNS) + " |" for r in rows_out]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows_out)
    return first, rows_out


def _panels_2d(surfaces: Sequence[Any], values: Sequence[np.ndarray], labels: Sequence[str],
               levels: np.ndarray | None, quantity: str, width: float | None = None) -> Any:
    lv = levels if levels is not None else style.nice_levels(list(values))
    n = len(surfaces)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = style.figure(figsize=(3.3 * cols + 1.0, 3.3 * rows + 0.3), layout="constrained", width=width)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=False, sharey=False)
    axis_labels = [surface_axis_labels(s) for s in surfaces]
    outer_only = len(set(axis_labels)) == 1
    cs = None
    for k, (s, z, lab) in enumerate(zip(surfaces, values, labels)):
        r, c = divmod(k, cols)
        ax = axes[r][c]
        X, Y = _grid(s)
        cs = ax.contourf(X, Y, z, levels=lv, cmap="viridis", extend="both" if levels is not None else "neither")
        ax.contour(X, Y, z, levels=lv, colors="k", linewidths=0.3, alpha=0.6)
        _overlay(ax, s)
        if ax.get_legend() is not None and k:
            ax.get_legend().remove()  # one trajectory legend is enough
        ax.set_title(style.wrap(lab) + partial_note(s), fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.xaxis.set_major_locator(style.nice_locator(4))
        ax.yaxis.set_major_locator(style.nice_locator(4))
        if not outer_only:
            ax.set_xlabel(axis_labels[k][0])
            ax.set_ylabel(axis_labels[k][1])
        if n > 1:
            style.panel_letter(ax, k)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if outer_only:  # one label per axis for the whole figure (panel-wide labels would overlap)
        fig.supxlabel(axis_labels[0][0], fontsize=9)
        fig.supylabel(axis_labels[0][1], fontsize=9)
    style.nice_colorbar(fig, cs, ax=axes.ravel().tolist(), label=quantity, shrink=min(0.9, 0.5 + 0.4 / rows))
    return fig


def _lines_1d(surfaces: Sequence[Any], values: Sequence[np.ndarray], labels: Sequence[str],
              levels: np.ndarray | None, quantity: str, width: float | None = None) -> Any:
    fig = style.figure(figsize=(6, 4), layout="constrained", width=width)
    ax = fig.add_subplot()
    for s, z, lab in zip(surfaces, values, labels):
        ax.plot(s.xcoordinates, z, label=lab)
    if levels is not None:
        ax.set_ylim(levels[0], levels[-1])
    ax.set_xlabel(surface_axis_labels(surfaces[0])[0])
    ax.set_ylabel(quantity)
    ax.legend()
    return fig


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of :func:`compare` rows for the terminal."""
    cols = list(METRIC_COLUMNS)
    cells = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)
