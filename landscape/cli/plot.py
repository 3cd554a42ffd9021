"""``python -m landscape plot|compare``: figures, HTML, VTS and metrics from surface files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..figures import style

METRICS_SHOWN = ("min", "max", "roughness", "convexity_share", "basin_width_x", "basin_width_y",
                 "basin_diameter", "basin_truncated")


def _metric_lines(metrics: dict[str, dict]) -> list[str]:
    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = []
    for key, m in metrics.items():
        shown = ", ".join(f"{k} {fmt(m[k])}" for k in METRICS_SHOWN if k in m)
        where = f" (on the {m['partial_grid']} sub-grid)" if m.get("partial_grid") else ""
        lines.append(f"metrics {key}{where}: {shown}")
    return lines


def cmd_plot(args: argparse.Namespace) -> int:
    from ..figures.plot import parse_levels, parse_range, plot_all, written_files
    from ..store import read_surface

    for path in args.files:
        written = plot_all(
            path,
            out_dir=args.out_dir,
            kinds=args.kinds,
            key=args.key,
            levels=parse_levels(args.levels),
            log=args.log,
            delta=args.delta,
            formats=args.formats,
            dpi=args.dpi,
            zlim=parse_range(args.zlim),
            elev=args.elev,
            azim=args.azim,
            width=args.width,
        )
        for p in written_files(written, args.formats):
            print(f"wrote {p}")
        for line in _metric_lines(read_surface(path).metrics):
            print(line)
        print(f"(metrics stored in {path} under /metrics)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..figures.compare import compare, default_output, format_table
    from ..figures.plot import parse_levels

    out = Path(args.out) if args.out else default_output(args.files, args.key)
    first, rows = compare(
        args.files,
        out,
        key=args.key,
        labels=args.labels,
        levels=parse_levels(args.levels),
        log=args.log,
        delta=args.delta,
        formats=args.formats,
        dpi=args.dpi,
        width=args.width,
    )
    print(format_table(rows))
    panels = ", ".join(str(p) for p in style.outputs(first, args.formats))
    print(f"panel: {panels}\ntable: {first.with_suffix('.md')} and {first.with_suffix('.csv')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` and ``compare`` subcommands."""

    def _common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--levels", default=None, help="contour levels vmin:vmax:step (default: round numbers)")
        scale = q.add_mutually_exclusive_group()
        scale.add_argument("--log", dest="log", action="store_true", default=None,
                           help="plot log10 of the value (default: when the values span more than two decades)")
        scale.add_argument("--linear", dest="log", action="store_false", help="plot the value itself")
        q.add_argument(
            "--delta", type=float, default=None, help="basin threshold above the centre loss (0.5)"
        )
        style.add_output_args(q)

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
    pl.add_argument("--elev", type=float, default=30.0, help="3D view elevation in degrees (default 30)")
    pl.add_argument("--azim", type=float, default=-60.0, help="3D view azimuth in degrees (default -60)")
    pl.add_argument("--zlim", default=None, help="3D z range lo:hi (values outside are clipped)")
    _common(pl)
    pl.set_defaults(func=cmd_plot)

    cp = sub.add_parser("compare", help="multi-panel figure with shared levels and a metrics table")
    cp.add_argument("files", nargs="+")
    cp.add_argument("--labels", nargs="+", default=None, help="panel titles (default: the models' names)")
    cp.add_argument("--key", default="train_loss", help="value compared (default train_loss; or test_loss, ...)")
    cp.add_argument("--out", default=None,
                    help="panel file (default runs/compare/<inputs>_<key>.png, named after the inputs)")
    _common(cp)
    cp.set_defaults(func=cmd_compare)
