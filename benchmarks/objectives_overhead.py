"""Cost of extra metrics on a surface: one grid point evaluated by :class:`landscape.engine.SurfaceEngine` with
the default objectives (cross-entropy and top-1, the baseline) vs ``--loss mse --metric top5 --metric ece
--metric margin`` (:mod:`landscape.objectives`), same model, data, engine settings and threads.

The two engines are interleaved (baseline, metrics, baseline, ...) so that load changes on a shared machine
affect both alike; the ratio is reported from the minima and from the medians, with the load average before
and after. Expectation: the metrics are a few elementwise ops on the logits, so the ratio is close to 1.

    python benchmarks/objectives_overhead.py                         # resnet18, width 0.25, 16x16, 512 samples
    python benchmarks/objectives_overhead.py --model bnext18 --samples 1024 --repeats 9 --threads 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: a loaded 2-core machine

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from landscape.directions import random_directions  # noqa: E402
from landscape.engine import SurfaceEngine  # noqa: E402
from landscape.objectives import make_objectives  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import bnext.models

    torch.manual_seed(0)
    model = bnext.models.create(args.model, num_classes=10, input_size=args.input_size, width=args.width).eval()
    g = torch.Generator().manual_seed(0)
    data = {"train": (torch.randn(args.samples, 3, args.input_size, args.input_size, generator=g),
                      torch.randint(0, 10, (args.samples,), generator=g))}
    d = random_directions(model, seed=0)
    metrics = make_objectives("mse", ["top5", "ece", "margin"])
    load0 = os.getloadavg()
    base_t, metric_t = [], []
    with SurfaceEngine(model, d, data, device="cpu") as base, SurfaceEngine(model, d, data, device="cpu",
                                                                            objectives=metrics) as extra:
        base.evaluate(0.1, 0.2), extra.evaluate(0.1, 0.2)  # warm-up
        for _ in range(args.repeats):
            for engine, times in ((base, base_t), (extra, metric_t)):
                t = time.perf_counter()
                engine.evaluate(0.1, 0.2)
                times.append(time.perf_counter() - t)
    load1 = os.getloadavg()
    print(f"{args.model} width {args.width} {args.input_size}x{args.input_size}, {args.samples} samples, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(f"  default (ce, top1):              min {min(base_t) * 1e3:8.1f} ms  median "
          f"{statistics.median(base_t) * 1e3:8.1f} ms")
    print(f"  mse + top1, top5, ece, margin:   min {min(metric_t) * 1e3:8.1f} ms  median "
          f"{statistics.median(metric_t) * 1e3:8.1f} ms")
    print(f"  ratio metrics/default: min {min(metric_t) / min(base_t):.3f}, median "
          f"{statistics.median(metric_t) / statistics.median(base_t):.3f}")
    print(f"  load average before {load0[0]:.2f}, after {load1[0]:.2f}")


if __name__ == "__main__":
    main()
