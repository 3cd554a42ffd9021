"""The paper's Fig. 2 set: train each model, take its 2D loss landscape, plot them side by side.

``FIG2_MODELS`` lists the seven panels of Fig. 2 (a-g): the real-valued ResNet-18, BinaryNet-18,
Bi-Real-18, Real2Binary-18 and BNext-18 with Info-RCP only, ELM-Attention only, and both.
:func:`landscape_set` trains (or reuses) each model, computes (or resumes) its surface, writes the
per-model figures, the shared-level panel and a table of test accuracy and smoothness metrics. It
serves ``landscape_figures.ipynb``, ``module_ablation.ipynb`` and ``python -m bnext.demo``.

Layout under ``out_dir``::

    <key>/                        the training run (config.yaml, metrics.jsonl, checkpoints/, result.json)
    <key>/landscape.h5            the surface (landscape store schema)
    <key>/landscape_train_loss_contour.png, _3d.png (+ .pdf), _3d.html
    fig2_contours.png / .pdf      all panels, shared contour levels and colour scale (log10 loss)
    fig6_surfaces.png / .pdf      the 3D surfaces side by side, shared z range
    fig2_contours.md / .csv       the landscape package's metrics table
    table.md / .tex / .csv        accuracy + smoothness per model (Markdown, LaTeX booktabs, CSV)

Figures follow :mod:`landscape.figures.style` (imported lazily, like every ``landscape`` use in ``bnext``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tasks
from .results import write_tables


@dataclass(frozen=True)
class Variant:
    key: str  # folder name
    label: str  # panel title / table row
    model: str  # registry name
    options: Mapping[str, Any] = field(default_factory=dict)


FIG2_MODELS: tuple[Variant, ...] = (
    Variant("resnet18", "ResNet-18 (real)", "resnet18"),
    Variant("binarynet18", "BinaryNet-18", "binarynet18"),
    Variant("bireal18", "Bi-Real-18", "bireal18"),
    Variant("real2binary18", "Real2Binary-18", "real2binary18"),
    Variant("bnext18_info_rcp", "BNext-18 (Info-RCP only)", "bnext18", {"info_rcp": True, "elm_attention": False}),
    Variant("bnext18_elm", "BNext-18 (ELM only)", "bnext18", {"info_rcp": False, "elm_attention": True}),
    Variant("bnext18", "BNext-18 (Info-RCP + ELM)", "bnext18", {"info_rcp": True, "elm_attention": True}),
)  # panel letters (a)-(g) are added by the panels in this order


def module_variants(model: str = "bnext18", info_rcp: Sequence[bool] = (True, False),
                    elm_attention: Sequence[bool] = (True, False)) -> list[Variant]:
    """Table 4 variants of a BNext model: every combination of Info-RCP and ELM-Attention on/off,
    labelled as the figures name them ("BNext-18 (Info-RCP only)")."""
    from landscape.figures.style import model_display_name

    out = []
    for rcp in info_rcp:
        for elm in elm_attention:
            key = f"{model}_rcp{'1' if rcp else '0'}_elm{'1' if elm else '0'}"
            label = model_display_name({"name": model, "options": {"info_rcp": bool(rcp), "elm_attention": bool(elm)}})
            out.append(Variant(key, label, model, {"info_rcp": bool(rcp), "elm_attention": bool(elm)}))
    return out


def select(names: Sequence[str] | None, variants: Sequence[Variant] = FIG2_MODELS) -> list[Variant]:
    """Variants by key (all when ``names`` is empty); unknown keys raise with the valid ones."""
    if not names:
        return list(variants)
    by_key = {v.key: v for v in variants}
    unknown = [n for n in names if n not in by_key]
    if unknown:
        raise ValueError(f"unknown model key(s) {unknown}; choose from {list(by_key)}")
    return [by_key[n] for n in names]


TABLE_COLUMNS = ("model", "params", "top1", "loss_centre", "roughness", "convexity_share", "basin_width_x",
                 "basin_width_y", "basin_diameter")


def run_variant(
    variant: Variant,
    out_dir: str | os.PathLike[str],
    *,
    train: Mapping[str, Any],
    landscape: Mapping[str, Any],
    plots: Sequence[str] = ("contour", "3d", "html"),
    watch: tasks.Stopwatch | None = None,
    stage: Callable[[str], None] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
) -> dict[str, Any]:
    """Train (or reuse) one variant, compute (or resume) its surface, plot it; returns its table row.

    ``train`` holds :func:`tasks.train_config` arguments (width, epochs, data, ...), ``landscape``
    :func:`tasks.compute_landscape` arguments (x, y, samples, ...).
    """
    watch = watch or tasks.Stopwatch()
    run_dir = Path(out_dir) / variant.key
    if stage:
        stage(f"train {variant.key}")
    with watch(f"train {variant.key}"):
        cfg = tasks.train_config(variant.model, out_dir=run_dir, options=dict(variant.options), **train)
        result = tasks.train(cfg)
    if stage:
        stage(f"landscape {variant.key}")
    with watch(f"landscape {variant.key}"):
        h5 = tasks.compute_landscape(result["checkpoint"], run_dir / "landscape.h5", **landscape)
    with watch(f"plots {variant.key}"):
        figures = tasks.plot_landscape(h5, run_dir, kinds=plots, formats=formats, dpi=dpi) if plots else {}
        metrics = tasks.landscape_row(h5)
    top1 = result.get("best_top1")
    return {
        "key": variant.key, "model": variant.label, "arch": variant.model, **dict(variant.options),
        "params": result.get("params"), "top1": top1, "final_top1": result.get("final_top1"),
        **metrics,
        "train_seconds": result.get("seconds"), "reused": result.get("reused"),
        "checkpoint": result["checkpoint"], "surface": str(h5),
        "figures": {k: str(v) for k, v in figures.items()},
    }


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], *,
                columns: Sequence[str] = TABLE_COLUMNS, stem: str = "table") -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.tex`` (booktabs) of the selected columns and ``<stem>.csv`` of every field."""
    fields = [k for k in rows[0] if k != "figures"] if rows else list(columns)
    return write_tables(rows, columns, Path(out_dir) / stem, csv_fields=fields,
                        caption="Test top-1 accuracy and smoothness of the train-loss landscape per model")


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """Aligned plain-text table for the terminal."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [list(columns)] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)


def landscape_set(
    out_dir: str | os.PathLike[str],
    variants: Sequence[Variant] = FIG2_MODELS,
    *,
    train: Mapping[str, Any],
    landscape: Mapping[str, Any],
    plots: Sequence[str] = ("contour", "3d", "html"),
    panel: str = "fig2_contours.png",
    panel_3d: str | None = "fig6_surfaces.png",
    log: bool = True,
    watch: tasks.Stopwatch | None = None,
    stage: Callable[[str], None] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
) -> dict[str, Any]:
    """Every variant through :func:`run_variant`, then the shared-level panel and the table.

    The panels share levels and colour scale; ``log`` draws ``log(loss)`` (sharp and flat landscapes
    on one scale). Returns ``{"rows", "panel", "panel_3d", "table": {"markdown", "csv"}, "seconds"}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    watch = watch or tasks.Stopwatch()
    rows = [run_variant(v, out_dir, train=train, landscape=landscape, plots=plots, watch=watch, stage=stage,
                        formats=formats, dpi=dpi) for v in variants]
    if stage:
        stage("panel")
    with watch("panel"):
        out = panels(rows, out_dir, panel=panel, panel_3d=panel_3d, log=log, formats=formats, dpi=dpi)
    return {"rows": rows, **out, "seconds": dict(watch.seconds)}


def panels(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], *,
           panel: str = "fig2_contours.png", panel_3d: str | None = "fig6_surfaces.png",
           log: bool = True, formats: Sequence[str] = ("png", "pdf"), dpi: int = 200) -> dict[str, Any]:
    """The contour panel, the 3D panel and the table of rows from :func:`run_variant`."""
    out_dir = Path(out_dir)
    paths, labels = [r["surface"] for r in rows], [r["model"] for r in rows]
    png, _ = tasks.compare_landscapes(paths, out_dir / panel, labels=labels, log=log, formats=formats, dpi=dpi)
    png3d = surfaces_3d_panel(paths, out_dir / panel_3d, labels=labels, log=log, formats=formats,
                              dpi=dpi) if panel_3d else None
    return {"panel": png, "panel_3d": png3d, "table": write_table(rows, out_dir)}


def surfaces_3d_panel(
    surfaces: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    labels: Sequence[str],
    key: str = "train_loss",
    log: bool = True,
    cols: int = 4,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
    elev: float = 30.0,
    azim: float = -60.0,
) -> Path:
    """3D surfaces side by side with one shared z range and colour scale (paper Fig. 6 style), panel
    letters and one colour bar; ``log`` plots ``log10(loss)`` so sharp and flat landscapes fit one scale."""
    import numpy as np
    from matplotlib import colors

    from landscape.figures import style
    from landscape.figures.plot import drawable, label_axes3d, plotted_values, surface_axis_labels
    from landscape.store import read_surface

    data = []
    for path in surfaces:
        s, _ = drawable(read_surface(path))
        if s.ndim != 2:
            raise ValueError(f"{path}: a 3D panel needs 2D surfaces")
        data.append((s, plotted_values(s, key, log)))
    lv = style.nice_levels([z for _, z in data])
    norm = colors.Normalize(float(lv[0]), float(lv[-1]))
    n = len(data)
    cols = min(cols, n)
    rows = -(-n // cols)
    quantity = style.quantity_label(key, log)
    with style.context():
        fig = style.figure(figsize=(3.4 * cols + 0.8, 3.2 * rows + 0.3))
        fig.suptitle(f"{quantity}: shared z range and colour scale", y=0.995, fontsize=10)
        width = 0.92 / cols
        axes = []
        for k, ((s, z), label) in enumerate(zip(data, labels)):
            r, c = divmod(k, cols)
            ax = fig.add_axes((c * width, 0.95 - (r + 1) * 0.95 / rows, width, 0.86 / rows), projection="3d")
            X, Y = np.meshgrid(s.xcoordinates, s.ycoordinates, indexing="ij")
            surf = ax.plot_surface(X, Y, np.ma.masked_invalid(z), cmap="viridis", norm=norm, linewidth=0,
                                   antialiased=True)
            ax.set_zlim(norm.vmin, norm.vmax)
            ax.view_init(elev=elev, azim=azim)
            xl, yl = surface_axis_labels(s)
            label_axes3d(ax, xl.split(" (")[0], yl.split(" (")[0], "", small=True)  # z: the colour bar
            ax.set_title(style.wrap(label, 28), fontsize=8, pad=0)
            if n > 1:
                style.panel_letter(ax, k, three_d=True)
            axes.append(ax)
        cax = fig.add_axes((0.94, 0.2, 0.012, 0.6))
        style.nice_colorbar(fig, surf, cax=cax, label=quantity)
        return style.save(fig, out, formats, dpi)
