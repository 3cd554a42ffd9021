"""``python -m landscape plot|compare``: figures, HTML, VTS and metrics from surface files."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_plot(args: argparse.Namespace) -> int:
    from ..plot import parse_levels, plot_all

    for path in args.files:
        written = plot_all(
            path,
            out_dir=args.out_dir,
            kinds=args.kinds,
            key=args.key,
            levels=parse_levels(args.levels),
            log=args.log,
            delta=args.delta,
        )
        for kind, p in written.items():
            print(f"{kind}: {p}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..plot import compare, format_table, parse_levels

    out = Path(args.out) if args.out else Path("runs") / "compare" / f"compare_{args.key}.png"
    png, rows = compare(
        args.files,
        out,
        key=args.key,
        labels=args.labels,
        levels=parse_levels(args.levels),
        log=args.log,
        delta=args.delta,
    )
    print(format_table(rows))
    print(f"panel: {png}\ntable: {png.with_suffix('.md')} and {png.with_suffix('.csv')}")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` and ``compare`` subcommands."""
    def _common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--levels", default=None, help="contour levels vmin:vmax:step")
        q.add_argument("--log", action="store_true", help="plot log(loss)")
        q.add_argument(
            "--delta", type=float, default=None, help="basin threshold above the centre loss (0.5)"
        )

    pl = sub.add_parser("plot", help="figures, HTML, VTS and metrics from surface files")
    pl.add_argument("files", nargs="+")
    pl.add_argument(
        "--kinds",
        nargs="+",
        default=None,
        help="subset of: 1d contour contourf heatmap 3d html plotly_png vts",
    )
    pl.add_argument("--key", default=None, help="value to plot (default train_loss)")
    pl.add_argument("--out-dir", default=None, help="folder for the figures (default: next to the file)")
    _common(pl)
    pl.set_defaults(func=cmd_plot)

    cp = sub.add_parser("compare", help="multi-panel figure with shared levels and a metrics table")
    cp.add_argument("files", nargs="+")
    cp.add_argument("--labels", nargs="+", default=None)
    cp.add_argument("--key", default="train_loss")
    cp.add_argument("--out", default=None, help="panel PNG (default runs/compare/compare_<key>.png)")
    _common(cp)
    cp.set_defaults(func=cmd_compare)
