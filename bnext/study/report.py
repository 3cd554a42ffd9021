"""A study's outputs: the table (Markdown, CSV, LaTeX) with mean [CI] and significance markers, the forest
plot, the contour panel of the median-roughness surface per variant, and the verdict lines.

Files under the study folder: ``study.json`` (every number of :func:`bnext.study.analysis.analyze`),
``table.md/.tex/.csv`` (one row per variant), ``intervals.csv`` (one row per variant x metric),
``pairwise.csv`` (every pair, Holm over the pairs of a metric), ``verdicts.md``, ``forest.png/.pdf``
and ``contours.png/.pdf``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import verdict_line
from .config import METRIC_LABELS

#: the metrics the table and the forest plot show (every analysed metric is in study.json / intervals.csv)
TABLE_METRICS = ("roughness", "convexity_share", "basin_diameter", "loss_centre", "top1", "top_eig", "trace",
                 "sharpness")


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def marker(p: float | None) -> str:
    """``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001 (Holm-adjusted against the reference)."""
    if p is None or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def cell(s: Mapping[str, Any], p: float | None = None) -> str:
    return f"{fmt(s['mean'])} [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]{marker(p)}"


def table_rows(result: Mapping[str, Any], labels: Mapping[str, str],
               metrics: Sequence[str] = TABLE_METRICS) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per variant: ``n`` and ``mean [low, high]`` per metric, markers vs the reference."""
    metrics = [m for m in metrics if m in result["metrics"]]
    ref = result.get("reference")
    rows = []
    for v in result["variants"]:
        first = result["summary"][metrics[0]][v]
        row: dict[str, Any] = {"model": labels.get(v, v), "n": f"{first['n_train']}x{first['n_per_train']}"}
        for m in metrics:
            vs = result["versus_reference"].get(m, {}).get(v) if ref else None
            row[m] = cell(result["summary"][m][v], vs["p_holm"] if vs else None)
        row["P(smoothest)"] = fmt(result["ranks"].get("roughness", {}).get(v, {}).get("p_first"), 2)
        rows.append(row)
    return rows, ["model", "n", *metrics, "P(smoothest)"]


def interval_rows(result: Mapping[str, Any], labels: Mapping[str, str]) -> list[dict[str, Any]]:
    out = []
    for m in result["metrics"]:
        for v in result["variants"]:
            s = result["summary"][m][v]
            vs = result["versus_reference"].get(m, {}).get(v, {})
            r = result["ranks"][m][v]
            out.append({"variant": v, "model": labels.get(v, v), "metric": m, "mean": s["mean"], "ci_low": s["ci_low"],
                        "ci_high": s["ci_high"], "n_train": s["n_train"], "n_per_train": s["n_per_train"],
                        "share_train": s["share_train"], "seed_means": s["seed_means"],
                        "p_vs_reference": vs.get("p"), "p_holm_vs_reference": vs.get("p_holm"),
                        "p_first": r["p_first"], "rank_lo": r["rank_lo"], "rank_hi": r["rank_hi"]})
    return out


def forest_plot(result: Mapping[str, Any], labels: Mapping[str, str], out: str | os.PathLike[str], *,
                metrics: Sequence[str] = TABLE_METRICS, title: str = "", formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> Path:
    """One panel per metric: each variant's mean with its interval (black) and its training-seed means
    (grey), the variant labelled with n = training seeds x surfaces per model."""
    from landscape.figures import style

    metrics = [m for m in metrics if m in result["metrics"]]
    variants = result["variants"]
    cols = min(4, len(metrics))
    nrows = -(-len(metrics) // cols)
    conf = int(round(100 * result["settings"]["confidence"]))
    with style.context():
        fig = style.figure(figsize=(3.0 * cols + 1.6, 0.34 * len(variants) * nrows + 1.2 * nrows + 0.6),
                           layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
        ys = np.arange(len(variants))[::-1]
        for k, m in enumerate(metrics):
            ax = axes[k // cols][k % cols]
            for y, v in zip(ys, variants):
                s = result["summary"][m][v]
                if s["seed_means"]:
                    ax.plot(s["seed_means"], [y] * len(s["seed_means"]), "o", color="0.6", ms=3, zorder=1)
                if math.isfinite(s["mean"]):
                    lo, hi = s["ci_low"], s["ci_high"]
                    ax.errorbar([s["mean"]], [y], xerr=[[s["mean"] - lo], [hi - s["mean"]]], fmt="o", color="k",
                                ms=4, capsize=3, lw=1.2, zorder=2)
            ax.set_xlabel(METRIC_LABELS.get(m, m))
            ax.grid(axis="x", alpha=0.3)
            ax.set_yticks(ys)
            if k % cols == 0:
                s0 = result["summary"][metrics[0]]
                ax.set_yticklabels([f"{labels.get(v, v)}\n(n={s0[v]['n_train']}x{s0[v]['n_per_train']})"
                                    for v in variants], fontsize=7)
        for k in range(len(metrics), nrows * cols):
            axes[k // cols][k % cols].set_visible(False)
        fig.suptitle(title or f"Mean and {conf}% hierarchical-bootstrap interval per variant "
                     "(grey: training-seed means)", fontsize=10)
        return style.save(fig, out, formats, dpi)


def median_surfaces(rows: Sequence[Mapping[str, Any]], variants: Sequence[str],
                    metric: str = "roughness") -> dict[str, dict[str, Any]]:
    """Per variant, the surface whose ``metric`` is the median of its surfaces (the lower middle for an
    even count): the representative panel, not the first seed's."""
    out = {}
    for v in variants:
        rs = [r for r in rows if r["variant"] == v and r.get(metric) is not None and math.isfinite(r[metric])]
        if not rs:
            continue
        rs = sorted(rs, key=lambda r: r[metric])
        out[v] = {**rs[(len(rs) - 1) // 2], "n": len(rs)}
    return out


def contour_panel(rows: Sequence[Mapping[str, Any]], variants: Sequence[str], labels: Mapping[str, str],
                  out: str | os.PathLike[str], *, formats: Sequence[str] = ("png", "pdf"),
                  dpi: int = 150) -> Path | None:
    """The Fig. 2 contour panel (shared levels, log loss) of each variant's median-roughness surface."""
    from bnext.ablate.tasks import compare_landscapes

    med = median_surfaces(rows, variants)
    if not med:
        return None
    keys = [v for v in variants if v in med]
    names = [f"{labels.get(v, v)}: median roughness of n={med[v]['n']} (seeds {med[v]['train_seed']}/"
             f"{med[v]['direction_seed']})" for v in keys]
    png, _ = compare_landscapes([med[v]["surface"] for v in keys], out, labels=names, log=True, formats=formats,
                                dpi=dpi)
    return Path(png)


def verdict_lines(result: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    alpha = result["settings"]["alpha"]
    m = len(result["verdicts"])
    lines = []
    for v in result["verdicts"]:
        line = verdict_line(v, labels, alpha)
        if v["verdict"].startswith("not resolved") and m > 1 and v["min_p"] < alpha <= v["min_p"] * m:
            line += f" (Holm over {m} claims needs p < {alpha / m:.2g}; the design's smallest p is {v['min_p']:.2g})"
        lines.append(line)
    return lines


def write_report(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], *,
                 labels: Mapping[str, str], title: str = "", formats: Sequence[str] = ("png", "pdf"),
                 dpi: int = 150, contours: bool = True) -> dict[str, Any]:
    """Every output file of a study; returns their paths and the verdict lines."""
    from bnext.ablate.results import atomic_write_json, write_tables

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"json": atomic_write_json(out / "study.json", result)}
    trows, columns = table_rows(result, labels)
    conf = int(round(100 * result["settings"]["confidence"]))
    ref = result.get("reference")
    caption = (f"Mean [{conf}% hierarchical-bootstrap CI] over training seeds x direction seeds (n); "
               + (f"* / ** / ***: differs from {labels.get(ref, ref)} at Holm-adjusted p < 0.05 / 0.01 / 0.001 "
                  f"({result['settings'].get('test', 'permutation')} test over training-seed means); " if ref else "")
               + "P(smoothest): bootstrap probability of the lowest roughness")
    paths["table"] = write_tables(trows, columns, out / "table", caption=caption)
    long = interval_rows(result, labels)
    paths["intervals"] = write_tables(long, list(long[0]), out / "intervals")["csv"] if long else None
    pair_rows = [{**p, "a_label": labels.get(p["a"], p["a"]), "b_label": labels.get(p["b"], p["b"])}
                 for p in result["pairwise"]]
    if pair_rows:
        paths["pairwise"] = write_tables(pair_rows, list(pair_rows[0]), out / "pairwise")["csv"]
    lines = verdict_lines(result, labels)
    from bnext.io import atomic_open

    with atomic_open(out / "verdicts.md", "w") as fh:
        fh.write("".join(f"- {line}\n" for line in lines) or "(no claims in the config)\n")
    paths["verdicts"] = out / "verdicts.md"
    paths["forest"] = forest_plot(result, labels, out / "forest.png", title=title, formats=formats, dpi=dpi)
    if contours:
        paths["contours"] = contour_panel(rows, result["variants"], labels, out / "contours.png", formats=formats,
                                          dpi=dpi)
    return {"paths": paths, "verdicts": lines, "table_rows": trows, "columns": columns, "caption": caption}
