"""Packed XNOR-popcount engine vs float: per binary 3x3 layer and end to end (issue 5).

One process, ``--threads`` (default 2) for torch and numba, batch 1 and 8. Every figure is
the best of several interleaved repeats (the machine may be shared: the load average is
printed). Per layer: the packed kernel on a packed input vs ``F.conv2d`` fp32 on the same
shape, and the whole packed layer (binarize + pack the NCHW float input, convolve, write
NCHW float). End to end: the packed model vs the simulated model (fp32, eval,
``torch.inference_mode``) and vs the same float model with its +-1 weights computed once.

    python benchmarks/packed_speed.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from bnext.packed.bench import cpu_model, layer_benchmark, load_average, model_benchmark, set_threads

LAYERS = [  # cin, cout, size, stride
    (64, 64, 56, 1),
    (128, 128, 28, 1),
    (256, 256, 14, 1),
    (512, 512, 7, 1),
    (256, 256, 14, 2),
]
MODELS = [("bnext18", 224), ("bnext18", 32), ("bnext_t", 224)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    ap.add_argument("--budget", type=float, default=105.0, help="seconds; repeats shrink when the machine is slow")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    start = time.perf_counter()
    print(f"CPU: {cpu_model()}; threads: {args.threads} (torch {torch.get_num_threads()}, numba); "
          f"load average at start: {load_average()}")
    layer_reps, model_reps = (3, 1) if args.quick else (10, 3)
    deadline = start + args.budget
    n_layers, n_models = len(LAYERS) * len(args.batches), len(MODELS) * len(args.batches)

    def share(items_left: int, weight: float) -> float:
        """Seconds one measurement may take: its share of the time left (a busy machine gets fewer repeats)."""
        return max(0.05, (deadline - time.perf_counter()) * weight / max(items_left, 1))

    print("\nBinary 3x3 conv layers: packed kernel vs F.conv2d fp32 (same shape), best of interleaved repeats")
    print(f"{'shape':<26} {'batch':>5} {'torch ms':>9} {'kernel ms':>10} {'ratio':>6} {'layer ms':>9} "
          f"{'ratio':>6} {'pack ms':>8}")
    done = 0
    for batch in args.batches:
        for cin, cout, size, stride in LAYERS:
            # 4 candidates x 3 rounds; layers get ~1/4 of the budget
            budget = share(n_layers - done, 0.25) / 12
            r = layer_benchmark(cin, cout, size, stride, batch=batch, repeats=layer_reps, max_seconds=budget)
            done += 1
            print(f"{r['shape']:<26} {batch:>5} {r['torch_ms']:>9.3f} {r['packed_ms']:>10.3f} {r['ratio']:>5.1f}x "
                  f"{r['packed_e2e_ms']:>9.3f} {r['ratio_e2e']:>5.1f}x {r['pack_input_ms']:>8.3f}", flush=True)
    print("  kernel = XNOR-popcount on an already packed input; layer = binarize + pack float NCHW input, "
          "kernel, float NCHW output")

    print("\nEnd to end: packed vs simulated fp32 (eval, inference_mode) and vs fp32 with precomputed +-1 weights")
    print(f"{'model':<9} {'input':>5} {'batch':>5} {'simulated':>10} {'prebin.':>9} {'packed':>8} {'ratio':>6} "
          f"{'ratio':>6} {'weights fp32':>12} {'packed':>8} {'max rel diff':>12}")
    done = 0
    for batch in args.batches:
        for name, size in MODELS:
            budget = share(n_models - done, 1.0) / 8  # 3 candidates x 2 rounds + warm-ups and checks
            r = model_benchmark(name, size, batch, repeats=model_reps, threads=args.threads, max_seconds=budget)
            done += 1
            print(f"{name:<9} {size:>5} {batch:>5} {r['simulated_ms']:>8.1f}ms {r['prebinarized_ms']:>7.1f}ms "
                  f"{r['packed_ms']:>6.1f}ms {r['ratio']:>5.1f}x {r['ratio_prebinarized']:>5.2f}x "
                  f"{r['weights_float_mib']:>8.2f} MiB {r['weights_packed_mib']:>4.2f} MiB {r['max_rel_diff']:>12.1e}",
                  flush=True)
    print("  ratio = simulated / packed, then prebinarized / packed; weights = parameters held for inference "
          "(binary convs at 1 bit when packed)")
    print(f"\nload average at end: {load_average()}; total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
