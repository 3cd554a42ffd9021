"""Packed XNOR-popcount engine vs float: per binary 3x3 layer and end to end (issue 5, issue 10).

One process, ``--threads`` (default 2) for torch and numba. The contenders of each row are run
interleaved (A, B, C, A, B, C ...); min and median are reported. The load average is printed at
start and end, with a warning when it exceeds the core count (ratios are then unreliable). The run
keeps to ``--budget`` seconds: repeats shrink with the time left and rows that no longer fit are
skipped (and listed). Results go to a JSON file next to the printed table.

Per layer: the packed kernel on a packed input vs ``F.conv2d`` fp32 on the same shape, and the
whole packed layer (binarize + pack the NCHW float input, convolve, write NCHW float), with the
popcount bound: 64-bit words to popcount / (one 512-bit VPOPCNTQ per cycle per thread) at the core
clock measured at start (:mod:`bnext.packed.roofline`: a chain of dependent adds; ``--ghz`` overrides
it), the same at the nominal 2.6 GHz the issue used, and the measured peak of the kernel's own step
(``vpxorq + vpopcntq + vpaddq`` on registers: on AMD Zen 4 the three share the vector pipes, so no
kernel of this form passes about 2/3 of the popcount bound). End to end: the packed model vs the
simulated model (fp32, eval, ``torch.inference_mode``), vs the same float model with its +-1
weights computed once, and the packed model with fused float passes (``pack(..., fuse_float=True)``).
Issue 10's packed targets are single-thread: ``--threads 1 --batches 1 --models bnext18:224``.

    python benchmarks/packed_speed.py                 # ~1-3 minutes on a quiet 2-core machine
    python benchmarks/packed_speed.py --quick         # batch 1 only, fewer rows and repeats (~30 s)
    python benchmarks/packed_speed.py --threads 1 --batches 1 --models bnext18:224
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bnext.io import atomic_open
from bnext.packed import roofline
from bnext.packed.bench import cpu_model, layer_benchmark, load_average, model_benchmark, set_threads

LAYERS = [  # cin, cout, size, stride
    (64, 64, 56, 1),
    (128, 128, 28, 1),
    (256, 256, 14, 1),
    (512, 512, 7, 1),
    (256, 256, 14, 2),
]
MODELS = ["bnext18:224", "bnext18:32", "bnext_t:224"]
#: AVX-512 VPOPCNTDQ: one 512-bit vpopcntq (8 words) per cycle per core (measured: roofline.measure)
POPCOUNT_WORDS_PER_CYCLE = 8.0
#: the clock the issue's bound used (the machine's nominal/TSC frequency, not its running clock)
NOMINAL_GHZ = 2.6


def popcount_bound_ms(cin: int, cout: int, size: int, stride: int, batch: int, threads: int, ghz: float) -> float:
    """Lower bound of a 3x3 binary layer's kernel time: 64-bit words to popcount / (8 per cycle per core)."""
    words = roofline.popcount_words(cin, cout, ((size - 1) // stride + 1) ** 2, 3, batch)
    return words / POPCOUNT_WORDS_PER_CYCLE / (ghz * 1e9) / threads * 1e3


def warn_load(where: str) -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cores = os.cpu_count() or 1
    print(f"load average {where}: {load_average()} ({cores} cores)")
    if load > cores:
        print(f"WARNING: load average {load:.1f} exceeds the {cores} cores: other jobs share the CPU, "
              "ratios are unreliable (rerun on a quiet machine)")
    return {"load1": load, "cores": cores}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 (--quick: 1)")
    ap.add_argument("--models", default=None, help=f"comma-separated name:input_size (default {','.join(MODELS)})")
    ap.add_argument("--quick", action="store_true", help="batch 1, fewer rows and repeats")
    ap.add_argument("--budget", type=float, default=None, help="seconds (default 150, --quick 40)")
    ap.add_argument("--ghz", type=float, default=None,
                    help="core clock for the popcount bound (default: measured at start)")
    ap.add_argument("--json", default="runs/benchmarks/packed_speed.json", help="results file")
    args = ap.parse_args(argv)
    batches = args.batches or ([1] if args.quick else [1, 8])
    models = [m for m in (args.models or ",".join(MODELS[:2] if args.quick else MODELS)).split(",") if m]
    layers = [LAYERS[2], LAYERS[3]] if args.quick else LAYERS
    budget = args.budget or (40.0 if args.quick else 150.0)
    set_threads(args.threads)
    start = time.perf_counter()
    deadline = start + budget
    print(f"CPU: {cpu_model()}; threads: {args.threads} (torch {torch.get_num_threads()}, numba)")
    out: dict = {"cpu": cpu_model(), "threads": args.threads, "budget_s": budget, "load_start": warn_load("at start"),
                 "layers": [], "models": [], "skipped": []}
    reps = 40 if args.quick else 200  # layer rows: calls of 0.03-3 ms, the time share caps them
    peak = roofline.measure()
    ghz = args.ghz or peak["clock_ghz"] or NOMINAL_GHZ
    out["roofline"] = dict(peak, bound_ghz=ghz, nominal_ghz=NOMINAL_GHZ)
    step = peak["xor_popcnt_add_zmm_per_s"]
    override = "" if args.ghz is None else f", bound at --ghz {ghz}"
    measured = "not measured (not x86-64)" if peak["clock_ghz"] is None else f"{peak['clock_ghz']:.2f} GHz measured"
    print(f"core clock {measured} (dependent adds){override}"
          + ("" if step is None else f"; 512-bit vpopcntq {peak['popcnt_zmm_per_cycle']:.2f}/cycle, "
             f"vpxorq+vpopcntq+vpaddq {peak['xor_popcnt_add_zmm_per_cycle']:.2f}/cycle (measured, registers)"))

    def share(items_left: int, weight: float) -> float:
        return max(0.02, (deadline - time.perf_counter()) * weight / max(items_left, 1))

    print("\nBinary 3x3 conv layers: packed kernel vs F.conv2d fp32 (same shape), interleaved, min (median)")
    print(f"{'shape':<26} {'batch':>5} {'torch ms':>9} {'kernel ms':>10} {'ratio':>13} {'layer ms':>9} "
          f"{'ratio':>13} {'bound':>6} {'@2.6':>5} {'peak':>5}")
    todo = [(b, spec) for b in batches for spec in layers]
    for k, (batch, (cin, cout, size, stride)) in enumerate(todo):
        if time.perf_counter() > start + 0.35 * budget:
            out["skipped"].append(f"layer {cin}->{cout} @{size} s{stride} batch {batch}")
            continue
        r = layer_benchmark(cin, cout, size, stride, batch=batch, repeats=reps,
                            max_seconds=share(len(todo) - k, 0.3))
        bound = popcount_bound_ms(cin, cout, size, stride, batch, args.threads, ghz)
        nominal = popcount_bound_ms(cin, cout, size, stride, batch, args.threads, NOMINAL_GHZ)
        r["popcount_bound_ms"], r["bound_fraction"] = bound, bound / r["packed_ms"]
        r["nominal_bound_ms"], r["nominal_bound_fraction"] = nominal, nominal / r["packed_ms"]
        words = roofline.popcount_words(cin, cout, ((size - 1) // stride + 1) ** 2, 3, batch)
        peak_ms = None if step is None else roofline.bound_ms(words, step, args.threads)
        r["step_peak_ms"], r["step_peak_fraction"] = peak_ms, None if step is None else peak_ms / r["packed_ms"]
        out["layers"].append(r)
        print(f"{r['shape']:<26} {batch:>5} {r['torch_ms']:>9.3f} {r['packed_ms']:>10.3f} "
              f"{r['ratio']:>5.1f}x ({r['median_ratio']:>4.1f}x) {r['packed_e2e_ms']:>9.3f} "
              f"{r['ratio_e2e']:>5.1f}x ({r['median_ratio_e2e']:>4.1f}x) {100 * r['bound_fraction']:>5.0f}% "
              f"{100 * r['nominal_bound_fraction']:>4.0f}% "
              + ("  n/a" if step is None else f"{100 * r['step_peak_fraction']:>4.0f}%"), flush=True)
    print(f"  kernel = XNOR-popcount on a packed input; layer = binarize + pack float NCHW input, kernel, float "
          f"NCHW output;\n  bound = popcount bound (one 512-bit VPOPCNTQ per cycle) at {ghz:.2f} GHz / kernel time; "
          f"@2.6 = the same at the nominal {NOMINAL_GHZ} GHz; peak = measured vpxorq+vpopcntq+vpaddq rate / kernel")

    print("\nEnd to end: packed vs simulated fp32 (eval, inference_mode) and vs fp32 with precomputed +-1 weights")
    print(f"{'model':<9} {'input':>5} {'batch':>5} {'simulated':>10} {'prebin.':>9} {'packed':>8} {'ratio':>13} "
          f"{'vs prebin':>9} {'max rel diff':>12} {'fused':>8} {'ratio':>13} {'rel diff':>8}")
    todo_m = [(b, m) for b in batches for m in models]
    for k, (batch, spec) in enumerate(todo_m):
        name, _, size = spec.partition(":")
        size = int(size or 224)
        left = deadline - time.perf_counter()
        if left < 0.1 * budget / max(1, len(todo_m)):
            out["skipped"].append(f"model {name}@{size} batch {batch}")
            continue
        r = model_benchmark(name, size, batch, repeats=3 if args.quick else 20, threads=args.threads,
                            max_seconds=share(len(todo_m) - k, 0.6))
        out["models"].append(r)
        print(f"{name:<9} {size:>5} {batch:>5} {r['simulated_ms']:>8.1f}ms {r['prebinarized_ms']:>7.1f}ms "
              f"{r['packed_ms']:>6.1f}ms {r['ratio']:>5.1f}x ({r['median_ratio']:>4.1f}x) "
              f"{r['ratio_prebinarized']:>8.2f}x {r['max_rel_diff']:>12.1e} {r['packed_fused_ms']:>6.1f}ms "
              f"{r['ratio_fused']:>5.1f}x ({r['median_ratio_fused']:>4.1f}x) {r['max_rel_diff_fused']:>8.1e}",
              flush=True)
    print("  ratio = simulated / packed: min (median); vs prebin = prebinarized / packed (min); fused = packed with "
          "the float parts as fused numba passes (pack(..., fuse_float=True); tolerance, not bit-identity)")
    if out["skipped"]:
        print(f"skipped to keep the {budget:.0f} s budget: " + "; ".join(out["skipped"]))
    out["load_end"] = warn_load("at end")
    out["total_s"] = time.perf_counter() - start
    print(f"total {out['total_s']:.0f} s (budget {budget:.0f} s)")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(json.dumps(out, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
