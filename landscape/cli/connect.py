"""``python -m landscape connect A.pt B.pt``: fit a low-loss curve between two checkpoints and compare it
with the straight line (barriers, 1D surface files, one figure). See :mod:`landscape.connect`.

The bnext glue: both checkpoints are rebuilt with ``bnext.models.load`` (they must be one
architecture), data come from ``bnext.data.load_tensors`` (or ``module:callable``) and, for binary
models, both paths are evaluated a second time with the packed 1-bit engine (``bnext.packed``).
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import store
from ..figures import style
from .compute import calibration_inputs, load_data, packed_forward_factory
from .outputs import default_out

LATENT_NOTE = ("the model has binary layers: the curve lives in the latent (real-valued) weights and the network "
               "computes with their signs (a flat stretch of the path is one set of signs)")


def _splits(text: str) -> list[str]:
    out = [v for v in text.split(",") if v]
    bad = [v for v in out if v not in ("train", "test")]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"splits must be train, test or train,test, got {text!r}")
    return out


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def _describe(metrics: dict[str, Any], label: str, split: str) -> str:
    b = metrics[f"{split}_loss_barrier"]
    lo, hi = metrics[f"{split}_loss_barrier_ci95"]
    t = metrics[f"{split}_barrier_t"]
    return (f"  {label:<26} {split} loss barrier {b:8.4f}  95% CI [{lo:.4f}, {hi:.4f}]  at t={t:.3g}"
            f"  accuracy drop {metrics[f'{split}_acc_drop']:.2f} points")


def connect_checkpoints(a: str | Path, b: str | Path, **options: Any) -> dict[str, Any]:
    """The command as a function (notebooks): options are named like its flags (``curve="polychain"``,
    ``steps=200``, ``out="runs/x"``, ``no_plot=True``, ...). Returns the files, barriers and figure."""
    args = parse_options(["connect", str(a), str(b)], options, register)
    return _connect(args)


def parse_options(argv: list[str], options: dict[str, Any], add: Callable[[Any], None]) -> argparse.Namespace:
    """A subcommand's namespace from ``argv`` (``add`` registers its parser), then keyword ``options``."""
    parser = argparse.ArgumentParser(prog="landscape")
    add(parser.add_subparsers())
    args = parser.parse_args(argv)
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; expected the command's flags with _ for -, "
                         f"e.g. {sorted(k for k in vars(args) if k != 'func')[:6]}")
    for k, v in options.items():
        setattr(args, k, v)
    return args


def run(args: argparse.Namespace) -> int:
    _connect(args)
    return 0


def _connect(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import bnext.models

    from ..connect import connect
    from ..figures.paths import plot_connect

    if args.threads:
        torch.set_num_threads(args.threads)
    for p in (args.a, args.b):
        if not Path(p).is_file():
            raise ValueError(f"{p}: no such checkpoint (expected two checkpoints written by bnext)")
    model_a, model_b = bnext.models.load(args.a), bnext.models.load(args.b)
    spec_a, spec_b = getattr(model_a, "spec", None), getattr(model_b, "spec", None)
    if spec_a != spec_b:
        raise ValueError(f"{args.a} and {args.b} are different models ({spec_a} vs {spec_b}); expected one "
                         "architecture")
    ns = types.SimpleNamespace(**vars(args), checkpoint=args.a, model=None)
    input_size = (spec_a or {}).get("input_size", 32)
    data, data_spec = load_data(ns, input_size)
    full = ns._full_data
    fit = full["train"] if "train" in full else load_data(
        types.SimpleNamespace(**{**vars(ns), "splits": ["train"], "subset": 0}), input_size)[0]["train"]
    from ..bn import has_batchnorm

    calibration = calibration_inputs(ns, input_size) if has_batchnorm(model_a) else None
    binary = _is_binary(model_a)
    meta = {"model": spec_a, "checkpoint_a_sha256": store.file_sha256(args.a),
            "checkpoint_b_sha256": store.file_sha256(args.b), "checkpoint_a": str(Path(args.a).resolve()),
            "checkpoint_b": str(Path(args.b).resolve()), "data": data_spec, "latent_weights": binary}
    out_dir = Path(args.out) if args.out else default_out(ns, "connect", 1).parent
    mode = "overwrite" if args.overwrite else "new" if args.new_file else "resume"
    if binary:
        print(f"note: {LATENT_NOTE}")
    kw = dict(kind=args.curve, bends=args.bends, points=args.points, steps=args.steps, batch_size=args.batch_size,
              lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, calibration=calibration,
              calibration_seed=args.bn_seed if calibration is not None else None, metadata=meta, mode=mode,
              progress=not args.no_progress)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    res = connect(out_dir, model_a, state_a, state_b, fit, data, **kw)
    files = [res.curve_path, res.line_path]
    results = [(f"{args.curve}, {args.bends} bend(s)", res.curve_metrics), ("straight line", res.line_metrics)]
    if binary and args.forward != "torch":
        probe = next(iter(data.values()))[0][:16]
        factory = packed_forward_factory(model_a, probe, required=args.forward == "packed")
        if factory is not None:  # the fit state resumes: nothing is trained twice
            packed = connect(out_dir, model_a, state_a, state_b, fit, data, **kw, forward_factory=factory,
                             evaluator_name="packed")
            print("  both paths also evaluated with the packed 1-bit engine (*_packed.h5)")
            files += [packed.curve_path, packed.line_path]
            results += [("curve, packed engine", packed.curve_metrics), ("line, packed engine", packed.line_metrics)]
    split = "test" if "test" in data else args.splits[0]
    print(f"mode connectivity between {args.a} and {args.b} ({args.points} points on each path):")
    for label, m in results:
        print(_describe(m, label, split))
    for f in files:
        print(f"  wrote {f}")
    fig = None
    if not args.no_plot:
        fig = plot_connect(files, out_dir / f"connect_{args.curve}{args.bends}", split=split, formats=args.formats,
                           dpi=args.dpi)
        print(f"  figure {fig}")
    return {"files": files, "barriers": dict(results), "figure": fig, "split": split, "latent_weights": binary}


def _is_binary(model: Any) -> bool:
    from bnext.nn import BinaryConv2d

    return any(isinstance(m, BinaryConv2d) for m in model.modules())


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``connect`` subcommand."""
    c = sub.add_parser("connect", help="fit a low-loss curve between two checkpoints (mode connectivity) and "
                                       "compare its barrier with the straight line's")
    c.add_argument("a", help="checkpoint of model A (t = 0)")
    c.add_argument("b", help="checkpoint of model B (t = 1), same architecture")
    c.add_argument("--curve", choices=["bezier", "polychain"], default="bezier",
                   help="curve family (Garipov et al. 2018; default bezier)")
    c.add_argument("--bends", type=_int_at_least(1), default=1, help="bend points of the curve (default 1)")
    c.add_argument("--points", type=_int_at_least(2), default=21,
                   help="values of t evaluated on each path (default 21)")
    c.add_argument("--steps", type=_int_at_least(0), default=500,
                   help="training steps of the bends (default 500; a larger value continues an earlier fit)")
    c.add_argument("--batch-size", type=_int_at_least(1), default=128, help="fit minibatch (default 128)")
    c.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the bends (default 1e-3)")
    c.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay of the bends (default 0)")
    c.add_argument("--seed", type=int, default=0, help="seed of the fit (t and minibatches)")
    c.add_argument("--data", default="digits", help="bnext.data name or 'module:callable' (default digits)")
    c.add_argument("--data-root", default=None, help="data root for data sets on disk")
    c.add_argument("--splits", type=_splits, default=["train", "test"],
                   help="splits evaluated along the paths (default train,test); the fit uses the whole train split")
    c.add_argument("--subset", type=int, default=512, help="samples per evaluated split, seeded (0 = all)")
    c.add_argument("--data-seed", type=int, default=0, help="seed of the subset choice")
    c.add_argument("--bn-samples", type=int, default=512, help="training inputs for BN recalibration per point")
    c.add_argument("--bn-seed", type=int, default=0, help="seed of the calibration subset")
    c.add_argument("--forward", choices=["auto", "torch", "packed"], default="auto",
                   help="binary models: also evaluate with the packed engine (auto: when it packs; packed: required)")
    c.add_argument("--out", help="output folder (default runs/<run>/ of checkpoint A)")
    c.add_argument("--name", help="run name for the default output folder")
    reuse = c.add_mutually_exclusive_group()
    reuse.add_argument("--overwrite", action="store_true", help="replace files made with other settings")
    reuse.add_argument("--new-file", action="store_true", help="write <stem>-N.h5 instead of reusing a file")
    c.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    c.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (logs, batch jobs)")
    style.add_output_args(c)
    c.set_defaults(func=run)
