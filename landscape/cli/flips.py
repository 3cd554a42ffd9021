"""``python -m landscape flips CHECKPOINT``: loss and accuracy of a binary network against the fraction of
flipped weight signs, on the packed 1-bit engine (:mod:`bnext.packed.flips`), with the spread over seeds.

Writes ``runs/<run>/flips/flips_<scope>_<order>_s<seed>.h5`` (1D surface files), ``summary.json`` and
``summary.csv`` (per scope and order: mean, std, min, max and 95 % t-interval over seeds) and the
figure ``flips.png``/``.pdf``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import types
from pathlib import Path
from typing import Any

from .. import store
from ..figures import style
from ..grid import parse_grid
from .compute import load_data
from .outputs import default_out


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must name distinct integers, got {text!r}")
    return seeds


def _fractions(text: str) -> list[float]:
    """``0:1:21`` (a grid) or a comma-separated list, from 0 to 1."""
    try:
        values = [float(v) for v in _list(text)] if "," in text else [float(v) for v in parse_grid(text, "fractions")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--fractions: {exc}") from None
    if len(values) < 2 or values[0] != 0.0 or values[-1] != 1.0 or any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError(f"--fractions must increase from 0 to 1, got {text!r}")
    return values


def _orders(text: str) -> list[str]:
    from bnext.packed.flips import ORDERS

    out = _list(text)
    bad = [o for o in out if o not in ORDERS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"--orders must be from {','.join(ORDERS)}, got {text!r}")
    return out


def _finite(value: object) -> object:
    """JSON-safe: NaN (a curve that never reaches half accuracy) becomes null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def summary_csv(summary: dict) -> str:
    """One row per (scope, order, metric) with the spread over seeds."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["scope", "order", "metric", "seeds", "mean", "std", "min", "max", "ci95_low", "ci95_high"])
    for scope, orders in summary.items():
        for order, entry in orders.items():
            for metric in ("half_accuracy_fraction", "accuracy_area", "acc_at_1", "loss_at_1"):
                s = entry[metric]
                w.writerow([scope, order, metric, s["n"], s["mean"], s["std"], s["min"], s["max"], *s["ci"]])
    return buf.getvalue()


def flip_checkpoint(checkpoint: str | Path, **options: Any) -> dict[str, Any]:
    """The command as a function (notebooks): options are named like its flags (``seeds=[0, 1]``,
    ``scope=["network"]``, ``out="runs/x/flips"``, ...). Returns the summary, files and figure."""
    from .connect import parse_options

    return _flips(parse_options(["flips", str(checkpoint)], options, register))


def run(args: argparse.Namespace) -> int:
    _flips(args)
    return 0


def _flips(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import bnext.models
    from bnext.io import atomic_open
    from bnext.packed import pack
    from bnext.packed.flips import flip_sweep, sweep_summary
    from bnext.packed.layers import PackingError

    from ..figures.paths import plot_flips

    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.checkpoint).is_file():
        raise ValueError(f"{args.checkpoint}: no such checkpoint (expected a binary model written by bnext)")
    model = bnext.models.load(args.checkpoint).eval()
    try:
        packed = pack(model, threads=args.packed_threads)
    except PackingError as exc:
        raise ValueError(f"{args.checkpoint}: cannot run on the packed engine ({exc})") from None
    spec = getattr(model, "spec", {})
    ns = types.SimpleNamespace(**vars(args), model=None)
    data, data_spec = load_data(ns, spec.get("input_size", 32))
    meta = {"model": spec, "checkpoint_sha256": store.file_sha256(args.checkpoint),
            "checkpoint_path": str(Path(args.checkpoint).resolve()), "data": data_spec}
    out_dir = Path(args.out) if args.out else default_out(ns, "flips", 1).parent / "flips"
    mode = "overwrite" if args.overwrite else "new" if args.new_file else "resume"
    from bnext.packed.flips import DEFAULT_FRACTIONS

    runs = flip_sweep(out_dir, model, packed, data, scopes=args.scope, orders=args.orders, seeds=args.seeds,
                      fractions=args.fractions or DEFAULT_FRACTIONS, metadata=meta, mode=mode,
                      progress=not args.no_progress)
    summary = sweep_summary(runs)
    with atomic_open(out_dir / "summary.json", "w") as f:
        json.dump(_finite(summary), f, indent=1)
    with atomic_open(out_dir / "summary.csv", "w") as f:
        f.write(summary_csv(summary))
    split = runs[0].metrics["split"]
    print(f"sign flips of {args.checkpoint} on the packed engine ({len(runs)} curves, {split} split):")
    for scope, orders in summary.items():
        for order, entry in orders.items():
            h = entry["half_accuracy_fraction"]
            spread = f" \u00b1 {100 * h['std']:.2f} (sd over {h['n']} seeds)" if h["n"] > 1 else ""
            half = f"at {100 * h['mean']:.3g}%{spread} of the signs flipped" if h["n"] else "never reached"
            print(f"  {scope:<20} {order:<10} half accuracy {half}; all flipped: accuracy "
                  f"{entry['acc_at_1']['mean']:.1f}%")
    print(f"  wrote {out_dir / 'summary.json'}, {out_dir / 'summary.csv'} and {len(runs)} surface files")
    fig = None
    if not args.no_plot:
        name = style.model_display_name(spec) or Path(args.checkpoint).stem
        fig = plot_flips(summary, out_dir / "flips", split=split, formats=args.formats, dpi=args.dpi,
                         title=f"Binary-weight landscape of {name}: flipped weight signs (packed 1-bit engine)")
        print(f"  figure {fig}")
    return {"summary": summary, "files": [r.path for r in runs], "figure": fig, "split": split,
            "out_dir": out_dir}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``flips`` subcommand."""
    c = sub.add_parser("flips", help="loss and accuracy against the fraction of flipped binary weight signs "
                                     "(packed engine)")
    c.add_argument("checkpoint", help="checkpoint of a fully binarized model (tau at sign)")
    c.add_argument("--scope", type=_list, default=["network", "all-layers"],
                   help="comma-separated: network, all-layers, or binary layer names (default network,all-layers)")
    c.add_argument("--orders", type=_orders, default=["random", "magnitude"],
                   help="flip orders: random (per seed), magnitude (smallest latent |w| first); default both")
    c.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="seeds of the random orders (default 0,1,2)")
    c.add_argument("--fractions", type=_fractions, default=None,
                   help="fractions of flipped signs: a grid 0:1:N or a list from 0 to 1 (default 0,0.001,...,1)")
    c.add_argument("--data", default="digits", help="bnext.data name or 'module:callable' (default digits)")
    c.add_argument("--data-root", default=None, help="data root for data sets on disk")
    c.add_argument("--splits", type=_list, default=["test"], help="evaluated splits (default test)")
    c.add_argument("--subset", type=int, default=512, help="samples per split, seeded (0 = all)")
    c.add_argument("--data-seed", type=int, default=0, help="seed of the subset choice")
    c.add_argument("--out", help="output folder (default runs/<run>/flips/)")
    c.add_argument("--name", help="run name for the default output folder")
    reuse = c.add_mutually_exclusive_group()
    reuse.add_argument("--overwrite", action="store_true", help="replace files made with other settings")
    reuse.add_argument("--new-file", action="store_true", help="write <stem>-N.h5 instead of reusing a file")
    c.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    c.add_argument("--packed-threads", type=int, default=2, help="numba threads of the packed engine (default 2)")
    c.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (logs, batch jobs)")
    style.add_output_args(c)
    c.set_defaults(func=run)
