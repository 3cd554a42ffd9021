"""CLI of the packed engine.

``python -m bnext.packed pack CHECKPOINT -o model.bnx``   checkpoint (bnext.models.save) -> packed file
``python -m bnext.packed info model.bnx [--json]``        sizes and binary layers of a packed file
``python -m bnext.packed bench [--model bnext18 --input-size 224 --batch 1 --threads 2]``
                                                          packed vs simulated time and ratio
``python -m bnext.packed sizes [--models bnext18 bnext_t ...]``
                                                          checkpoint vs packed file size

``--help`` imports neither torch nor numba (they load when a command runs); ``--threads`` sets torch's
and numba's thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import ArgumentParser, add_threads_argument, note

MIB = 2**20


def _threads(n: int | None) -> None:
    if n is not None:
        from .bench import set_threads

        set_threads(n)


def _cmd_pack(args: argparse.Namespace) -> int:
    from .. import models
    from ..cli import note
    from ..nn import binary_layers, set_tau
    from ..nn.binary_conv import SIGN_THRESHOLD
    from ..quant import apply as _quant_apply  # noqa: F401  (registers the rebuild of quantized checkpoints)
    from . import PackingError, pack, save

    _threads(args.threads)
    note(f"loading {args.checkpoint} ...")
    try:
        model = models.load(args.checkpoint)
    except models.CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    taus = [float(m.tau) for _, m in binary_layers(model)]
    if args.binarize and taus and max(taus) > SIGN_THRESHOLD:
        print(f"note: tau was {max(taus):.3g}; setting it to 0 (pure sign weights) before packing", file=sys.stderr)
        set_tau(model, 0.0)
    note(f"packing {len(taus)} binary layers (the first run also compiles the kernels, about 20 s) ...")
    try:
        packed = pack(model.eval())
    except PackingError as e:
        print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(".bnx")
    note(f"writing {out} ...")
    try:
        save(packed, out)
    except OSError as e:  # disk full, read-only: one line (bnext.io.FileWriteError), nothing half-written
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt_mib = Path(args.checkpoint).stat().st_size / MIB
    print(f"wrote {out}: {out.stat().st_size / MIB:.2f} MiB (checkpoint {ckpt_mib:.2f} MiB), "
          f"{sum(1 for _ in packed.packed_layers())} binary layers")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import PackedFormatError, info

    try:
        summary = info(args.file)
    except PackedFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    spec = summary["spec"]
    b = summary["bytes"]
    print(f"{summary['path']}: {summary['file_mib']:.3f} MiB ({summary['file_bytes']:,} bytes), "
          f"{summary['arrays']} arrays")
    print(f"model {spec['name']} num_classes={spec['num_classes']} input_size={spec['input_size']} "
          f"options={spec['options']} quant_spec={summary['quant_spec']}")
    print(f"payload: binary {b.get('binary', 0) / MIB:.3f} MiB, quantized {b.get('quant', 0) / MIB:.3f} MiB, "
          f"real {b.get('real', 0) / MIB:.3f} MiB")
    print(f"{'binary layer':<40} {'in':>5} {'out':>5} {'k':>2} {'s':>2} {'scale':<18} {'shift':<5} {'KiB':>8}")
    for layer in summary["layers"]:
        kib = layer["in_channels"] * layer["out_channels"] * layer["kernel_size"] ** 2 / 8 / 1024
        print(f"{layer['name']:<40} {layer['in_channels']:>5} {layer['out_channels']:>5} {layer['kernel_size']:>2} "
              f"{layer['stride']:>2} {layer['scale']:<18} {str(layer['shift']):<5} {kib:>8.1f}")
    for q in summary["quantized"]:
        print(f"quantized {q['name']}: {q['bits']} bit, shape {q['shape']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import cpu_model, load_average, model_benchmark, set_threads

    set_threads(args.threads)
    r = model_benchmark(args.model, args.input_size, args.batch, args.width, repeats=args.repeats,
                        threads=args.threads)
    print(f"CPU: {cpu_model()}, threads: {args.threads}, load average: {load_average()}")
    print(f"{r['model']} @{r['input_size']} batch {r['batch']} width {r['width']}: simulated fp32 "
          f"{r['simulated_ms']:.2f} ms, packed {r['packed_ms']:.2f} ms, ratio {r['ratio']:.2f}x "
          f"(best of {args.repeats}; max rel. logit diff {r['max_rel_diff']:.1e})")
    print(f"float model with precomputed +-1 weights: {r['prebinarized_ms']:.2f} ms, "
          f"ratio {r['ratio_prebinarized']:.2f}x")
    print(f"weights: float {r['weights_float_mib']:.2f} MiB, packed {r['weights_packed_mib']:.2f} MiB "
          f"(binary convs {r['binary_float_mib']:.2f} -> {r['binary_packed_mib']:.3f} MiB); "
          f"pack() {r['pack_ms']:.1f} ms")
    return 0


def _cmd_sizes(args: argparse.Namespace) -> int:
    import tempfile

    from .bench import size_row

    _threads(args.threads)
    print(f"{'model':<9} {'checkpoint MiB':>14} {'packed MiB':>11} {'ratio':>6} {'counted MiB':>12} {'paper MiB':>10} "
          f"{'packed vs paper':>15}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for i, name in enumerate(args.models, 1):
            note(f"[{i}/{len(args.models)}] {name}: building, saving the checkpoint, packing, counting ...")
            r = size_row(name, tmp)
            paper = r["paper_mib"]
            vs = f"{100 * (r['packed_mib'] / paper - 1):+.1f}%" if paper else "n/a"
            print(f"{name:<9} {r['checkpoint_mib']:>14.2f} {r['packed_mib']:>11.2f} "
                  f"{r['checkpoint_mib'] / r['packed_mib']:>5.1f}x {r['counted_mib']:>12.2f} "
                  f"{paper if paper else float('nan'):>10.2f} {vs:>15}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m bnext.packed", description="Packed 1-bit inference engine.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack a checkpoint into a .bnx file")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", help="output path (default: checkpoint name with .bnx)")
    p.add_argument("--binarize", action="store_true", help="set tau to 0 first if the model is not fully binary")
    add_threads_argument(p)
    p.set_defaults(fn=_cmd_pack)
    p = sub.add_parser("info", help="describe a .bnx file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("bench", help="time the packed model against the simulated one")
    p.add_argument("--model", default="bnext18")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    add_threads_argument(p, default=2)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser("sizes", help="checkpoint vs packed file size of BNext models (224, 1000 classes)")
    p.add_argument("--models", nargs="+", default=["bnext18", "bnext_t", "bnext_s", "bnext_m", "bnext_l"])
    p.add_argument("--workdir", default=None, help="where the temporary files go (default: system temp)")
    add_threads_argument(p)
    p.set_defaults(fn=_cmd_sizes)
    args = ap.parse_args(argv)
    if getattr(args, "threads", None) is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
