"""Cost of the engine's per-point audit: the defaults with ``audit=True`` (the default) vs ``audit=False``.

At every grid point the engine re-runs the images most at risk (``landscape.engine.audit.AUDIT_SIZE``
per split: the smallest binary margins in the fast forward, the smallest logit margins) through the
model's own forward and compares (module docstring of :mod:`landscape.engine.audit`). This script
times both engines on the same models, data and grid as ``benchmarks/landscape_speed.py`` (digits at
32x32, filter-normalized random directions, BN statistics from the subset), interleaved point by point
(on, off, off, on, ...) so that load changes hit both alike, and prints per model the min and median
seconds per point of each, the overhead of the audit (median of on/off, and min/min), the points the
audit recomputed, and the load average (a warning above the core count). Set-up is not counted.

Target: overhead <= 10% per point on resnet18, bnext18 (width 1.0) and bireal18 (width 1.0); ``resnet20``
(Li et al.'s CIFAR ResNet-20 on all 1,797 digits, see ``benchmarks/landscape_speed.py``) can be added.

    python benchmarks/audit_overhead.py                  # 3 models, 3x3 grid, 512 samples (~3-5 min)
    python benchmarks/audit_overhead.py --quick          # 2x2 grid, 128 samples
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from landscape_speed import load_info, model_and_data  # the sibling script: benchmarks/ is on sys.path
from tqdm.auto import tqdm

from bnext.io import atomic_open
from landscape.bn import recalibrate_bn
from landscape.directions import random_directions
from landscape.engine import SurfaceEngine
from landscape.grid import parse_grid


def bench(name: str, args: argparse.Namespace) -> dict:
    # the speed benchmark's models and data (resnet20: all 1,797 digits, else --samples training digits)
    own = argparse.Namespace(**{**vars(args), "samples": None if name == "resnet20" else args.samples,
                                "default_samples": args.samples})
    model, x, y, opts = model_and_data(name, own)
    recalibrate_bn(model, x)  # statistics as after training (see benchmarks/landscape_speed.py)
    dirs = random_directions(model, seed=0, normalization="filter", bias_bn="ignore")
    xs = parse_grid(f"-1:1:{args.grid}")
    points = [(float(a), float(b)) for a in xs for b in xs]
    data = {"train": (x, y)}
    engines = {"on": SurfaceEngine(model, dirs, data).open(),
               "off": SurfaceEngine(copy.deepcopy(model), dirs, data, audit=False).open()}
    print(f"[{name}] {len(x)} samples, {len(points)} points, forward {engines['on'].settings['forward']}, "
          f"batch {engines['on'].batch_size}, {torch.get_num_threads()} threads", flush=True)
    times: dict[str, list[float]] = {k: [] for k in engines}
    for k, p in enumerate(tqdm(points, desc=name, unit="pt", leave=False, disable=args.no_progress)):
        for which in (("on", "off") if k % 2 == 0 else ("off", "on")):
            t0 = time.perf_counter()
            engines[which].evaluate(*p)
            times[which].append(time.perf_counter() - t0)
    counters = dict(engines["on"].counters)
    for e in engines.values():
        e.close()
    on, off = np.array(times["on"]), np.array(times["off"])
    r = {
        "model": name, "width": opts.get("width", 1.0), "samples": len(x), "points": len(points),
        "s_per_point": {k: {"min": float(np.min(v)), "median": float(np.median(v))} for k, v in times.items()},
        "overhead_median": float(np.median(on) / np.median(off) - 1.0),
        "overhead_min": float(on.min() / off.min() - 1.0),
        "audit_counters": counters,
    }
    print(f"[{name}] audit on: min {on.min():.3f} s, median {np.median(on):.3f} s per point; off: min "
          f"{off.min():.3f} s, median {np.median(off):.3f} s -> overhead {100 * r['overhead_median']:+.1f}% "
          f"(median), {100 * r['overhead_min']:+.1f}% (min); recomputed {counters['audit_failed_points']} of "
          f"{counters['audited_points']} audited points", flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,bnext18,bireal18", help="comma-separated zoo models")
    p.add_argument("--grid", type=int, default=None, help="points per axis of the [-1,1]^2 grid (default 3, quick 2)")
    p.add_argument("--samples", type=int, default=None, help="digits training samples (default 512, quick 128)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of binary models (default 1.0)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--quick", action="store_true", help="2x2 grid, 128 samples")
    p.add_argument("--json", default="runs/benchmarks/audit_overhead.json", help="results file")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    args = p.parse_args()
    args.grid = args.grid or (2 if args.quick else 3)
    args.samples = args.samples or (128 if args.quick else 512)
    torch.set_num_threads(args.threads)
    load_before = load_info("before")
    results = [bench(name.strip(), args) for name in args.models.split(",") if name.strip()]
    load_after = load_info("after")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w") as f:
        json.dump({"results": results, "load_average": [load_before, load_after], "threads": args.threads}, f,
                  indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
