"""Figures of paths between weights: a mode-connecting curve against the straight line
(:mod:`landscape.connect`), and loss/accuracy against the fraction of flipped binary weight signs
(``bnext.packed.flips``). Both read only the surface files and summaries they wrote."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..store import Surface, read_surface
from . import style
from .plot import surface_name

PATH_NAMES = {"bezier": "Bezier curve", "polychain": "polygonal chain", "line": "straight line"}


def _barrier_ci(surface: Surface, split: str) -> str:
    m = surface.metrics.get("barrier", {})
    b = m.get(f"{split}_loss_barrier")
    if b is None:
        return ""
    ci = m.get(f"{split}_loss_barrier_ci95")
    ci = json.loads(ci) if isinstance(ci, str) else ci
    return f" (barrier {b:.3g}, 95% CI [{ci[0]:.3g}, {ci[1]:.3g}])" if ci else f" (barrier {b:.3g})"


def _path_label(surface: Surface) -> str:
    kind = surface.settings.get("path", "line")
    bends = surface.settings.get("fit", {}).get("bends")
    name = PATH_NAMES.get(kind, kind)
    return f"{name}, {bends} bend{'s' if bends != 1 else ''}" if bends else name


def plot_connect(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    formats: Sequence[str] | None = style.DEFAULT_FORMATS,
    dpi: int = style.DEFAULT_DPI,
) -> Path:
    """Loss (left) and accuracy (right) against t for each path file (curve, line, their packed
    evaluations: dotted, drawn on top); the legend below the panels names each path and its barrier with its
    95 % bootstrap interval."""
    surfaces = [read_surface(p) for p in paths]
    if not surfaces:
        raise ValueError("plot_connect needs at least one path file")
    split = split or ("test" if np.isfinite(surfaces[0].values["test_loss"]).any() else "train")
    colors = {"line": "tab:gray", "bezier": "tab:blue", "polychain": "tab:green"}
    with style.context():
        fig = style.figure(figsize=(8, 3.6), layout="constrained")
        ax_l, ax_a = fig.subplots(1, 2)
        for s in surfaces:
            kind = s.settings.get("path", "line")
            packed = s.settings.get("evaluated_by", "torch") != "torch"
            label = _path_label(s) + (f", {s.settings['evaluated_by']} forward" if packed else "")
            kw = ({"color": "black", "ls": ":", "lw": 1.0, "zorder": 3} if packed  # on top: visible where equal
                  else {"color": colors.get(kind, "tab:purple"), "ls": "-", "marker": ".", "ms": 4})
            ax_l.plot(s.xcoordinates, s.values[f"{split}_loss"], label=label + _barrier_ci(s, split), **kw)
            ax_a.plot(s.xcoordinates, s.values[f"{split}_acc"], **kw)
        for ax, what in ((ax_l, f"{split} loss"), (ax_a, f"{split} accuracy (%)")):
            ax.set_xlabel("t (A at 0, B at 1)")
            ax.set_ylabel(what)
            ax.set_xlim(0, 1)
            ax.grid(True)
        ax_l.set_title("loss along the path")
        ax_a.set_title("accuracy along the path")
        latent = " (latent weights)" if surfaces[0].settings.get("latent_weights") else ""
        fig.suptitle(f"Mode connectivity of {surface_name(surfaces[0])}{latent}")
        fig.legend(*ax_l.get_legend_handles_labels(), loc="outside lower center", ncols=min(2, len(surfaces)))
        return style.save(fig, out, formats, dpi)


def plot_flips(
    summary: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    title: str = "",
    split: str = "test",
    formats: Sequence[str] | None = style.DEFAULT_FORMATS,
    dpi: int = style.DEFAULT_DPI,
) -> Path:
    """(a) loss and (b) accuracy against the share of flipped signs in the whole network (random
    order: mean with the min-max band over seeds; magnitude order: one line); (c) each layer alone: the
    share of its signs at which accuracy falls halfway to chance (mean and min-max over seeds) against
    depth, open triangles where it never does."""
    orders = {"random": "tab:blue", "magnitude": "tab:orange"}
    names = {"random": "random order", "magnitude": "smallest |latent w| first"}
    layers = [k for k in summary if k != "network"]
    with style.context():
        ncols = 3 if layers else 2
        fig = style.figure(figsize=(3.2 * ncols, 3.4), layout="constrained")
        axes = fig.subplots(1, ncols)
        net = summary.get("network", {})
        for order, entry in net.items():
            f = 100 * np.asarray(entry["fractions"])
            for ax, key in ((axes[0], f"{split}_loss"), (axes[1], f"{split}_acc")):
                curves = np.asarray(entry["curves"].get(key, []), float)
                if not curves.size:
                    continue
                n = curves.shape[0]
                label = f"{names[order]} ({n} seed{'s' if n > 1 else ''})"
                ax.plot(f, curves.mean(axis=0), color=orders[order], marker=".", ms=4, label=label)
                if n > 1:
                    ax.fill_between(f, curves.min(axis=0), curves.max(axis=0), color=orders[order], alpha=0.25,
                                    lw=0)
        from matplotlib.ticker import FixedLocator, FuncFormatter

        for ax, what in ((axes[0], f"{split} loss"), (axes[1], f"{split} accuracy (%)")):
            ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
            ax.set_xlim(0, 100)
            ax.xaxis.set_major_locator(FixedLocator([0, 0.5, 1, 2, 5, 10, 20, 50, 100]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel("weight signs flipped, whole network (%)")
            ax.set_ylabel(what)
            ax.grid(True)
        axes[0].set_title("loss")
        axes[1].set_title("accuracy")
        if layers:
            ax = axes[2]
            depth = np.arange(len(layers))
            for shift, order in ((-0.15, "random"), (0.15, "magnitude")):
                stats = [summary[k].get(order, {}).get("half_accuracy_fraction") for k in layers]
                if not any(stats):
                    continue
                mean = np.array([100 * s["mean"] if s and s["n"] else math.nan for s in stats])
                lo = np.array([100 * s["min"] if s and s["n"] else math.nan for s in stats])
                hi = np.array([100 * s["max"] if s and s["n"] else math.nan for s in stats])
                ax.errorbar(depth + shift, mean, yerr=[mean - lo, hi - mean], fmt="o", ms=3, capsize=2,
                            color=orders[order], label=names[order])
                never = np.array([s is not None and s["n"] == 0 for s in stats])
                if never.any():  # accuracy never fell halfway to chance, even with every sign of the layer flipped
                    ax.scatter(depth[never] + shift, np.full(never.sum(), 100.0), marker="^", s=18,
                               facecolors="none", edgecolors=orders[order], clip_on=False,
                               label="never halfway, even with all signs flipped" if order == "random" else None)
            ax.set_ylim(0, 100)
            ax.set_xlabel("binary layer (depth)")
            ax.set_ylabel("signs of the layer flipped\nat half accuracy (%)")
            ax.set_title("each layer alone (min-max over seeds)")
            ax.set_xticks(depth if len(layers) <= 10 else depth[:: math.ceil(len(layers) / 8)])
            ax.grid(True)
        handles, labels = axes[0].get_legend_handles_labels()
        if layers:
            extra = [(h, lab) for h, lab in zip(*axes[2].get_legend_handles_labels()) if lab.startswith("never")]
            handles, labels = handles + [h for h, _ in extra], labels + [lab for _, lab in extra]
        fig.legend(handles, labels, loc="outside lower center", ncols=3)
        fig.suptitle(title or "Binary-weight landscape: flipped weight signs (packed 1-bit engine)")
        return style.save(fig, out, formats, dpi)
