"""CLI: quantize a checkpoint, print Table 7 for a checkpoint, or print the Table 2 † sizes.

    python -m bnext.quant --checkpoint CKPT --spec SPEC [--finetune-epochs N] [--data digits] [-o out.pt]
    python -m bnext.quant table --checkpoint CKPT [--finetune-epochs N] [--data digits] [--json]
    python -m bnext.quant size [bnext18 bnext_t ...] [--spec SPEC] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..cli import ArgumentParser, add_threads_argument, note, progress, set_threads
from .spec import PAPER_SPEC, TABLE7_SPECS

if TYPE_CHECKING:  # torch is imported when a command runs, so --help stays fast
    import torch

COMMANDS = """commands (each has its own --help):
  (none)  quantize one checkpoint with --spec and report its top-1 before and after
  table   Table 7 for one checkpoint: top-1 under each of the five I-S-E-O specs
  size    Table 2 † rows: size, QOPs and OPs of the quantized BNext models (224x224, 1000 classes)"""


def _data_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", required=True, help="float checkpoint written by bnext.models.save")
    ap.add_argument("--data", default="digits", help="dataset for calibration, fine-tuning and evaluation")
    ap.add_argument("--root", default=None, help="dataset root (datasets that are not embedded)")
    ap.add_argument("--finetune-epochs", type=int, default=0, help="section 7.5 fine-tuning epochs (paper: 5)")
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: section 7.5's 1e-7)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--calib-batches", type=int, default=None, help="calibration batches (default: all train)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    add_threads_argument(ap)


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module, list, list]:
    import torch

    from .. import models
    from ..data import load_tensors
    from .tune import FINETUNE_LR

    set_threads(args.threads)
    if args.lr is None:
        args.lr = FINETUNE_LR
    note(f"loading {args.checkpoint} and the {args.data} data")
    model = models.load(args.checkpoint, map_location=args.device)
    size = model.spec["input_size"]
    g = torch.Generator().manual_seed(args.seed)
    x, y = load_tensors(args.data, "train", input_size=size, root=args.root)
    perm = torch.randperm(len(y), generator=g)
    train = list(zip(x[perm].split(args.batch_size), y[perm].split(args.batch_size)))
    xt, yt = load_tensors(args.data, "test", input_size=size, root=args.root)
    test = list(zip(xt.split(args.batch_size), yt.split(args.batch_size)))
    return model, train, test


def _cmd_quantize(argv: list[str]) -> int:
    ap = ArgumentParser(prog="python -m bnext.quant", description="Quantize a checkpoint (Table 7 spec).",
                                 epilog=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_args(ap)
    ap.add_argument("--spec", default=PAPER_SPEC, help=f"I-S-E-O[-D] W/A bits (default {PAPER_SPEC})")
    ap.add_argument("-o", "--output", default=None, help="write the quantized checkpoint here")
    args = ap.parse_args(argv)
    from .apply import calibrate, quantize, save
    from .spec import parse_spec
    from .tune import finetune, run_evaluate

    spec = parse_spec(args.spec)
    model, train, test = _load(args)
    before = run_evaluate(model, progress(test, "float model: evaluate"), device=args.device)
    q = quantize(model, spec)
    calibrate(q, progress(train, f"{args.spec}: calibrate", args.calib_batches), device=args.device,
              max_batches=args.calib_batches)
    history = finetune(q, lambda: progress(train, f"{args.spec}: fine-tune"), epochs=args.finetune_epochs, lr=args.lr,
                       device=args.device)
    if history:
        calibrate(q, progress(train, f"{args.spec}: re-calibrate", args.calib_batches), device=args.device,
                  max_batches=args.calib_batches)
    after = run_evaluate(q, progress(test, f"{args.spec}: evaluate"), device=args.device)
    print(f"{model.spec['name']} {q.quant_spec}: top-1 {before['top1']:.2f} -> {after['top1']:.2f} "
          f"({after['top1'] - before['top1']:+.2f}) on {args.data} test"
          + (f" after {args.finetune_epochs} fine-tuning epochs" if history else ""))
    if args.output:
        try:
            path = save(q, args.output, float_top1=before["top1"], top1=after["top1"],
                        finetune_epochs=args.finetune_epochs)
        except OSError as e:  # disk full, read-only: one line (bnext.io.FileWriteError), nothing half-written
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
    return 0


def _cmd_table(argv: list[str]) -> int:
    ap = ArgumentParser(prog="python -m bnext.quant table", description="Table 7 for one checkpoint.")
    _data_args(ap)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from .report import format_table7, table7

    model, train, test = _load(args)
    rows = table7(model, train, test, specs=TABLE7_SPECS, finetune_epochs=args.finetune_epochs, lr=args.lr,
                  calib_batches=args.calib_batches, device=args.device, progress=progress)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{model.spec['name']} on {args.data} (fine-tuning epochs: {args.finetune_epochs})")
        print(format_table7(rows, model.spec["name"]))
    return 0


def _cmd_size(argv: list[str]) -> int:
    ap = ArgumentParser(prog="python -m bnext.quant size", description="Table 2 † size/QOPs/OPs.")
    ap.add_argument("models", nargs="*", default=None, help="registry names (default: BNext-18, -T, -S, -M, -L)")
    ap.add_argument("--spec", default=None, help="spec for every model (default: the † spec of each)")
    ap.add_argument("--json", action="store_true")
    add_threads_argument(ap)
    args = ap.parse_args(argv)
    from .report import DAGGER_SPECS, dagger_row, format_dagger

    set_threads(args.threads)
    names = args.models or list(DAGGER_SPECS)
    rows = [dagger_row(name, args.spec) for name in progress(names, "counting", unit="model")]
    print(json.dumps(rows, indent=2) if args.json else format_dagger(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"table": _cmd_table, "size": _cmd_size}
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return _cmd_quantize(argv)
    except ValueError as e:  # bad spec, data or checkpoint (bnext.models.CheckpointError is a ValueError)
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
