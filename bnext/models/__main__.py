"""CLI of the model zoo.

``python -m bnext.models import OFFICIAL.pth.tar -o runs/official/bnext_t.pt``
    the authors' released BNext checkpoint -> a workbench checkpoint (``bnext.models.load``)
``python -m bnext.models list``
    registered models and their options
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import ArgumentParser


def _cmd_import(args: argparse.Namespace) -> int:
    from ..cli import note
    from . import OfficialCheckpointError, import_official, save

    note(f"reading {args.checkpoint} and mapping its tensors onto the workbench model ...")
    try:
        model = import_official(args.checkpoint, name=args.name, num_classes=args.num_classes,
                                input_size=args.input_size, sign_zero=args.sign_zero)
    except (OfficialCheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path("runs/official") / f"{model.spec['name']}.pt"
    conv = model.official
    taus = sorted({float(m.tau) for m in model.modules() if hasattr(m, "tau")})
    note(f"writing {out} ...")
    try:
        save(model, out, imported_from=str(Path(args.checkpoint).resolve()), official_mapped=len(conv.mapped),
             official_dropped=conv.dropped)
    except OSError as e:  # disk full, read-only: one line (bnext.io.FileWriteError), nothing half-written
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {args.checkpoint}: {conv.describe()}")
    print(f"binary layers: tau {'0 (pure sign)' if taus == [0.0] else taus}; sign(0) = {args.sign_zero:+d}"
          f"{' (packable)' if args.sign_zero else ' (as their torch.sign; not packable)'}")
    print(f"wrote {out} (load it with bnext.models.load)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from . import list_models, model_options

    for name in list_models():
        options = {k: v for k, v in model_options(name).items() if k not in ("num_classes", "input_size")}
        print(f"{name:<14} " + ", ".join(f"{k}={v}" for k, v in options.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m bnext.models", description="Model zoo: import official "
                                 "BNext checkpoints, list models.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{import,list}")
    imp = sub.add_parser("import", help="convert the authors' BNext checkpoint to a workbench checkpoint",
                         description="Read the authors' released BNext-T/S/M/L or BNext-18 checkpoint "
                         "(weights_only=True), recognize model and width, write a workbench checkpoint.")
    imp.add_argument("checkpoint", help="the authors' file, e.g. bnext_tiny.pth.tar")
    imp.add_argument("-o", "--output", default=None, help="output (default runs/official/<model>.pt)")
    imp.add_argument("--name", default=None, choices=["bnext_t", "bnext_s", "bnext_m", "bnext_l", "bnext18"],
                     help="the model, when the shapes are ambiguous (default: recognized)")
    imp.add_argument("--num-classes", type=int, default=None,
                     help="a new classifier with this many classes (default: the checkpoint's)")
    imp.add_argument("--input-size", type=int, default=None,
                     help="input resolution (default: 224 for their strided stem, else 32)")
    imp.add_argument("--sign-zero", type=int, choices=[1, 0], default=1,
                     help="sign(0): 1 = paper Eq. 1, packable (default); 0 = their torch.sign, bit-exact")
    imp.set_defaults(func=_cmd_import)
    lst = sub.add_parser("list", help="registered models and their options")
    lst.set_defaults(func=_cmd_list)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
