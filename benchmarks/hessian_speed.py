"""Hessian-vector product cost, interleaved on the same model, data, vector and threads.

Contenders per model (one product each, timed in turn so that load changes on a shared machine affect
all alike; the ratios are reported from the minima and the medians, with the load average):

* ``grad``: the plain ``torch.autograd.grad`` of the model's loss over the same batches (the unit: target
  HVP <= 3 gradients);
* ``cold``: :meth:`landscape.curvature.hessian.Hessian.hvp` rebuilding the forward and first-backward
  graph for the product (``cache_graph=False``);
* ``warm``: the same with its defaults, as Lanczos and Hutchinson run it: each part of the data (32
  samples) keeps its graph between products at the same weights and the parts run in parallel on
  single-threaded workers (:mod:`landscape.curvature.products`, one worker per torch thread);
* ``pyh``: PyHessian 0.1 (``pip install -e .[bench]``; Yao et al. 2020) on one batch: its
  ``hessian_vector_product`` on the gradient graph it keeps from its constructor;
* with ``--batches N`` (N > 1) the data are N batches: ``pyh`` is PyHessian's ``dataloader_hv_product``
  (a forward, a backward with ``create_graph`` and a second backward per batch and product).

Threads: torch's default (the machine's cores) unless ``--threads``; PyHessian runs on all of them.

Equal accuracy: both compute the same operator in float32 (mean cross-entropy, eval mode); the relative
difference of their products on the same vector is printed (it should be float32 rounding, ~1e-6).
Target: PyHessian's time over ours >= 1.5 per product.

    python benchmarks/hessian_speed.py                                     # resnet18, bnext18, width 0.25
    python benchmarks/hessian_speed.py --batches 4 --batch 32 --repeats 7  # the multi-batch (data loader) case
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: a loaded 2-core machine

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from landscape.bn import recalibrate_bn  # noqa: E402
from landscape.curvature.hessian import Hessian  # noqa: E402


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _pyhessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batches: int):
    """PyHessian's product as its users call it (None when it is not installed)."""
    try:
        from pyhessian import hessian as pyh_hessian
        from pyhessian.utils import hessian_vector_product
    except ImportError:
        return None
    crit = torch.nn.CrossEntropyLoss()
    if batches == 1:
        ph = pyh_hessian(model, crit, data=(x, y), cuda=False)
        return lambda vs: hessian_vector_product(ph.gradsH, ph.params, vs)
    loader = list(zip(x.chunk(batches), y.chunk(batches)))
    ph = pyh_hessian(model, crit, dataloader=loader, cuda=False)
    return lambda vs: ph.dataloader_hv_product(vs)[1]


def bench(name: str, width: float, input_size: int, batch: int, batches: int, repeats: int,
          part_size: int | None = None) -> dict[str, float]:
    import bnext.models

    torch.manual_seed(0)
    model = bnext.models.create(name, num_classes=10, input_size=input_size, width=width).eval()
    g = torch.Generator().manual_seed(0)
    n = batch * batches
    x = torch.randn(n, 3, input_size, input_size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    # BN statistics of the data: a fresh deep model in eval mode with unit statistics has exploding
    # activations (bnext18: products of ~1e23), where equal formulas differ by float rounding alone
    recalibrate_bn(model, x, batch)
    cold = Hessian(model, (x, y), batch_size=batch, cache_graph=False)  # every product from scratch
    warm = Hessian(model, (x, y), batch_size=batch, **({"part_size": part_size} if part_size else {}))  # defaults
    v = torch.randn(cold.dim, generator=g, dtype=torch.float64)
    vs = [t.float().clone() for t in cold._split(v)]
    params = list(model.parameters())
    pyh = _pyhessian(model, x, y, batches)

    def plain() -> None:  # the gradient over the same data, batch by batch
        for xb, yb in zip(x.split(batch), y.split(batch)):
            torch.autograd.grad(torch.nn.functional.cross_entropy(model(xb), yb), params)

    ours = warm.hvp(v)
    plain(), cold.hvp(v)  # warm-up (allocator)
    # accuracy: both float32 products against the float64 product of the same model and data
    exact = Hessian(copy.deepcopy(model).double(), (x.double(), y), batch_size=batch).hvp(v)
    out: dict[str, float] = {"params": cold.dim, "pyh_rel_diff": float("nan"), "pyh_err": float("nan"),
                             "ours_err": float((ours - exact).norm() / exact.norm())}
    if pyh is not None:
        ref = torch.cat([t.reshape(-1) for t in pyh(vs)]).double()
        out["pyh_rel_diff"] = float((ref - ours).norm() / ref.norm())
        out["pyh_err"] = float((ref - exact).norm() / exact.norm())
    times: dict[str, list[float]] = {"grad": [], "cold": [], "warm": [], "pyh": []}
    for _ in range(repeats):
        times["grad"].append(_time(plain))
        times["cold"].append(_time(lambda: cold.hvp(v)))
        times["warm"].append(_time(lambda: warm.hvp(v)))
        if pyh is not None:
            times["pyh"].append(_time(lambda: pyh(vs)))
    for k, ts in times.items():
        out[f"{k}_min"] = min(ts) if ts else float("nan")
        out[f"{k}_med"] = statistics.median(ts) if ts else float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "bnext18"])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--input-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=1, help="batches of data (PyHessian's data loader when > 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--part-size", type=int, default=None, help="samples per part of our products (default 32)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    print(f"load average before: {os.getloadavg()}; {args.threads} thread(s), {args.batches} batch(es) of "
          f"{args.batch}, {args.input_size}x{args.input_size}, width {args.width}, {args.repeats} interleaved repeats")
    head = ("model", "params", "grad min/med (s)", "cold HVP min/med", "warm HVP min/med", "PyHessian min/med",
            "warm/grad min", "PyH/warm min", "PyH/warm med", "PyH diff", "err ours/PyH")
    print(f"{head[0]:<10}{head[1]:>10}{head[2]:>19}{head[3]:>19}{head[4]:>19}{head[5]:>19}{head[6]:>14}"
          f"{head[7]:>13}{head[8]:>13}{head[9]:>10}  {head[10]}")
    for name in args.models:
        r = bench(name, args.width, args.input_size, args.batch, args.batches, args.repeats, args.part_size)
        print(f"{name:<10}{r['params']:>10,}"
              + "".join(f"{r[k + '_min']:>10.3f}/{r[k + '_med']:<8.3f}" for k in ("grad", "cold", "warm", "pyh"))
              + f"{r['warm_min'] / r['grad_min']:>14.2f}{r['pyh_min'] / r['warm_min']:>13.2f}"
              f"{r['pyh_med'] / r['warm_med']:>13.2f}{r['pyh_rel_diff']:>10.1e}"
              f"  {r['ours_err']:.1e}/{r['pyh_err']:.1e}  load {os.getloadavg()[0]:.2f}",
              flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("PyH/warm: PyHessian's time per product over ours (target >= 1.5; NaN: pyhessian not installed, "
          "pip install -e .[bench]); warm/grad: a product in gradients (target <= 3); PyH diff: "
          "||Hv_pyhessian - Hv_ours|| / ||Hv_pyhessian||; err: each float32 product's relative distance to the "
          "float64 product (ReLU kinks make float32 rounding matter: PyHessian's eval BatchNorm path on resnet18)")


if __name__ == "__main__":
    main()
