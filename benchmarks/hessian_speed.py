"""Hessian-vector product cost: one HVP (:meth:`landscape.curvature.hessian.Hessian.hvp`, double backward) vs one
gradient evaluation on the same batch, same model, same threads: the plain ``torch.autograd.grad`` of the
model's loss (the baseline) and :meth:`landscape.curvature.hessian.Hessian.gradient` (BatchNorm as its eval affine map).
Two HVPs are timed: "cold" rebuilds the forward and first-backward graph for the product (``cache_graph=False``),
"warm" reuses the graph kept from the previous product at the same weights, as Lanczos and Hutchinson do.

The two are interleaved (gradient, HVP, gradient, HVP, ...) so that load changes on a shared machine
affect both alike; the ratio is reported from the minima and from the medians, with the load average
before and after. Target: an HVP costs at most 3x a gradient.

    python benchmarks/hessian_speed.py                                  # resnet18 and bnext18, width 0.25
    python benchmarks/hessian_speed.py --models bnext18 --batch 128 --repeats 7 --threads 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: a loaded 2-core machine

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from landscape.curvature.hessian import Hessian  # noqa: E402


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(name: str, width: float, input_size: int, batch: int, repeats: int) -> dict[str, float]:
    import bnext.models

    torch.manual_seed(0)
    model = bnext.models.create(name, num_classes=10, input_size=input_size, width=width).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, input_size, input_size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    h = Hessian(model, (x, y), batch_size=batch, cache_graph=False)  # every product from scratch
    warm = Hessian(model, (x, y), batch_size=batch, cache_graph=True)  # graph kept between products
    v = torch.randn(h.dim, generator=g, dtype=torch.float64)
    params = list(model.parameters())

    def plain() -> None:
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params)

    plain(), h.gradient(), h.hvp(v), warm.hvp(v)  # warm-up (allocator; the warm operator builds its graph)
    grads, own, hvps, warms = [], [], [], []
    for _ in range(repeats):
        grads.append(_time(plain))
        hvps.append(_time(lambda: h.hvp(v)))
        warms.append(_time(lambda: warm.hvp(v)))
        own.append(_time(h.gradient))
    return {
        "params": h.dim,
        "grad_min": min(grads), "grad_med": statistics.median(grads),
        "own_min": min(own), "own_med": statistics.median(own),
        "hvp_min": min(hvps), "hvp_med": statistics.median(hvps),
        "warm_min": min(warms), "warm_med": statistics.median(warms),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "bnext18"])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}; {args.threads} thread(s), batch {args.batch}, "
          f"{args.input_size}x{args.input_size}, width {args.width}, {args.repeats} interleaved repeats")
    head = ("model", "params", "grad min/med (s)", "cold HVP min/med", "ratio min", "ratio med", "vs own grad",
            "warm HVP min/med", "warm ratio min/med")
    print(f"{head[0]:<14}{head[1]:>10}{head[2]:>20}{head[3]:>20}{head[4]:>11}{head[5]:>11}{head[6]:>13}"
          f"{head[7]:>20}{head[8]:>20}")
    worst = worst_warm = 0.0
    for name in args.models:
        r = bench(name, args.width, args.input_size, args.batch, args.repeats)
        rmin, rmed = r["hvp_min"] / r["grad_min"], r["hvp_med"] / r["grad_med"]
        worst = max(worst, rmin)
        worst_warm = max(worst_warm, r["warm_min"] / r["grad_min"])
        print(f"{name:<14}{r['params']:>10,}{r['grad_min']:>10.3f}/{r['grad_med']:<9.3f}"
              f"{r['hvp_min']:>10.3f}/{r['hvp_med']:<9.3f}{rmin:>11.2f}{rmed:>11.2f}"
              f"{r['hvp_min'] / r['own_min']:>13.2f}{r['warm_min']:>10.3f}/{r['warm_med']:<9.3f}"
              f"{r['warm_min'] / r['grad_min']:>11.2f}/{r['warm_med'] / r['grad_med']:<8.2f}")
    print(f"load average after: {os.getloadavg()}")
    print(f"largest HVP / gradient ratio (minima, plain torch gradient as baseline): cold {worst:.2f}, "
          f"warm {worst_warm:.2f} (target <= 3); 'vs own grad': the cold HVP over Hessian.gradient()")


if __name__ == "__main__":
    main()
