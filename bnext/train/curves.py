"""Training curves: loss, top-1, learning rate and binarization temperature tau against epoch.

Read from a run's ``metrics.jsonl`` (one line per epoch, see :mod:`bnext.train.runner`). Every run
writes ``curves.png`` and ``curves.pdf`` into its folder when it ends; several runs are overlaid by

    python -m bnext.train plot RUN_DIR [RUN_DIR ...] [--out FILE.png] [--format png,pdf,svg] [--dpi N]

Style: :mod:`landscape.figures.style`, the workbench's one figure style, imported inside the drawing
functions only (matplotlib and ``landscape`` are never imported with ``bnext.train``; the arrow
points ``bnext -> landscape``, as in ``bnext.ablate``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cli import ArgumentParser

#: the four panels: (title, y label, [(metrics.jsonl key, line style, legend word)])
PANELS = (
    ("loss", "cross-entropy loss", (("train_loss", "-", "train"), ("test_loss", "--", "test"))),
    ("top-1 accuracy", "top-1 accuracy (%)", (("train_top1", "-", "train"), ("test_top1", "--", "test"))),
    ("learning rate", "learning rate (during the epoch)", (("lr", "-", None),)),
    ("binarization temperature", "\u03c4 (at the epoch's start)", (("tau", "-", None),)),
)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epoch rows of ``<run_dir>/metrics.jsonl`` (a clear error when it is missing or broken)."""
    path = Path(run_dir) / "metrics.jsonl"
    if Path(run_dir).is_file() and Path(run_dir).name == "metrics.jsonl":
        path = Path(run_dir)
    if not path.is_file():
        raise ValueError(f"{run_dir}: no metrics.jsonl (expected a run folder written by python -m bnext.train)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{path}:{n}: not a JSON line") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise ValueError(f"{path}:{n}: an epoch row needs an 'epoch' key")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no epochs recorded yet")
    return rows


def run_title(run_dir: str | os.PathLike[str]) -> str:
    """``"<run folder>: BNext-18 (Info-RCP + ELM) on digits"`` from the run's ``config.yaml``."""
    from landscape.figures.style import model_display_name

    run_dir = Path(run_dir)
    name = run_dir.name
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError, ImportError):
        return name
    model = cfg.get("model") or {}
    options = {**(model.get("options") or {})}
    if "width" in model:
        options.setdefault("width", model["width"])
    shown = model_display_name({"name": model.get("name"), "options": options})
    data = (cfg.get("data") or {}).get("name")
    return f"{name}: {shown}{f' on {data}' if data else ''}" if shown else name


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(r["epoch"]))
            ys.append(float(v))
    return xs, ys


def plot_curves(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
) -> Path:
    """Panels of loss, top-1, lr and tau against epoch (those some run recorded) with one colour per run;
    train solid, test dashed.

    Returns the first file written (``out`` with the first format's suffix).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from landscape.figures import style

    if not run_dirs:
        raise ValueError("plot needs at least one run folder")
    runs = [(Path(d), read_metrics(d)) for d in run_dirs]
    labels = list(labels) if labels else [run_title(d) if len(runs) == 1 else d.name for d, _ in runs]
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    colours = [f"C{k % 10}" for k in range(len(runs))]
    # a panel only for what some run recorded (a real-valued ResNet has no tau: no empty panel)
    panels = [p for p in PANELS if any(_series(rows, key)[0] for _, rows in runs for key, _, _ in p[2])]
    if not panels:
        raise ValueError(f"{', '.join(str(d) for d, _ in runs)}: metrics.jsonl holds no epoch metrics to plot")
    with style.context():
        ncols = 2 if len(panels) == 4 else len(panels)
        nrows = -(-len(panels) // ncols)
        fig = style.figure(figsize=(4.0 * ncols, 3.0 * nrows + 0.5), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
        for k, (ax, (title, ylabel, keys)) in enumerate(zip(axes, panels)):
            for (_, rows), colour in zip(runs, colours):
                for key, line, _ in keys:
                    xs, ys = _series(rows, key)
                    if xs:
                        ax.plot(xs, ys, line, color=colour, marker="o" if len(xs) < 25 else None, markersize=3)
            if keys[0][0] == "lr":
                lrs = [v for _, rows in runs for v in _series(rows, "lr")[1] if v > 0]
                if lrs and max(lrs) / min(lrs) > 20:
                    ax.set_yscale("log")
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
            ax.grid(True, alpha=0.3)
            ax.spines[["top", "right"]].set_visible(False)
            style.panel_letter(ax, k, outside=True)
            if k >= len(panels) - ncols:
                ax.set_xlabel("epoch")
        handles = [Line2D([], [], color="k", linestyle="-", label="train"),
                   Line2D([], [], color="k", linestyle="--", label="test")]
        if len(runs) > 1:
            handles += [Line2D([], [], color=c, label=lab) for c, lab in zip(colours, labels)]
            fig.suptitle("training curves")
        else:
            fig.suptitle(labels[0])
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
        return style.save(fig, out, formats, dpi)


def write_run_curves(run_dir: str | os.PathLike[str], formats: Sequence[str] = ("png", "pdf")) -> Path:
    """``<run_dir>/curves.png`` and ``.pdf`` of one run (what the trainer writes when a run ends)."""
    return plot_curves([run_dir], Path(run_dir) / "curves.png", formats=formats)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnext.train plot RUN_DIR... [--out FILE] [--labels ...] [--format ...] [--dpi N]``."""
    from landscape.figures.style import add_output_args, outputs

    p = ArgumentParser(prog="python -m bnext.train plot",
                                description="Training curves (loss, top-1, lr, tau against epoch) of one or "
                                            "more runs, overlaid.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders with a metrics.jsonl")
    p.add_argument("--out", default=None,
                   help="figure file (default: RUN_DIR/curves.png for one run, runs/curves/<runs>.png for several)")
    p.add_argument("--labels", nargs="+", default=None, help="legend entries (default: the run folders' names)")
    add_output_args(p)
    args = p.parse_args(argv)
    if args.out:
        out = Path(args.out)
    elif len(args.runs) == 1:
        out = Path(args.runs[0]) / "curves.png"
    else:
        out = Path("runs") / "curves" / ("_vs_".join(Path(r).resolve().name for r in args.runs)[:120] + ".png")
    try:
        first = plot_curves(args.runs, out, labels=args.labels, formats=args.formats, dpi=args.dpi)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in outputs(first, args.formats):
        print(f"wrote {path}")
    return 0
