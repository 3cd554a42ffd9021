"""Loss-landscape speed: the reference tool's per-point loop vs the ``landscape`` engine with its DEFAULTS.

For each model the same 2D grid (filter-normalized random directions, seed 0) is evaluated

(a) the way Li et al.'s tool does it: for every point ``p.data = w + x*dx + y*dy`` from the stored
    per-parameter directions, then a DataLoader with batch 128 over the subset, ``torch.no_grad``,
    fp32, loss accumulated as ``loss.item() * batch``;
(b) with :class:`landscape.engine.SurfaceEngine` and no options at all (what ``compute_surface``
    and ``python -m landscape compute`` do): the packed XNOR engine for binary models, BN folding and
    channels-last for float models, the deterministic batch rule; set-up counts as engine time;

interleaved point by point (A, B, B, A, ...) so that load changes on a shared machine hit both alike;
min and median seconds per point are reported with the load average (a warning when it exceeds
the core count). Agreement is checked against the tolerance contract (relative loss <= 5e-3,
accuracy within 0.5 points at every point) and printed next to the noise floor: the same comparison
between two batch sizes (128 and 512) of the unfused float model at two points. ``--bf16`` adds
the engine with ``precision="bf16"`` and prints its agreement. The run keeps to ``--budget``
seconds (points left out are reported; ratios use the points both contenders ran). Results go to a
JSON file next to the printed table.

``resnet20`` is Li et al.'s own model (the CIFAR ResNet-20 of their tool, defined here for the benchmark
only) on all 1,797 digits at 32x32, the comparison of issue 20 (an 11x11 grid there). ``--layers``
prints where the engine's time goes: seconds per point of each conv (with its algorithm) at the
engine's batch, 1 thread, CPU time of the calling thread (insensitive to other jobs' load).

Targets (quiet 2-core CPU, 2 threads, median per point): resnet18 >= 1.9x, bnext18 width 1.0 >= 6x,
bireal18 width 1.0 >= 4.3x, resnet20 >= 2x; on a GPU >= 10x points/s.

    python benchmarks/landscape_speed.py                      # resnet18, bnext18, bireal18; ~3 min
    python benchmarks/landscape_speed.py --models resnet20 --grid 11   # Li et al.'s ResNet-20, 1,797 digits
    python benchmarks/landscape_speed.py --models resnet20 --layers    # + per-layer seconds
    python benchmarks/landscape_speed.py --quick              # 2x2 grid, 128 samples (~40 s)
    python benchmarks/landscape_speed.py --device cuda        # points/s on the GPU (resnet18, bnext18)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from landscape.bn import recalibrate_bn
from landscape.directions import Directions, random_directions
from landscape.engine import TOLERANCE, SurfaceEngine
from landscape.grid import parse_grid


class _BasicBlock(nn.Module):
    """He et al.'s CIFAR basic block as Li et al.'s tool writes it (``cifar10/models/resnet.py``): two 3x3 convs
    with BN, ``out += shortcut(x)``, and a 1x1 conv + BN shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016, sec. 4.2: 3 stages of 3 basic blocks, 16-32-64 channels; 272,474
    parameters for 10 classes), the model of Li et al.'s landscape tool. Benchmark-only definition."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for k in range(3):
                blocks.append(_BasicBlock(c_in, c_out, stride if k == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def model_and_data(name: str, args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """The model (seed 0, eval mode) and the digits inputs/targets at 32x32: for ``resnet20`` all 1,797 digits
    (train and test splits, as in the issue's comparison with Li et al.'s tool) unless ``--samples`` is
    given, else a seeded subset of ``--samples`` training digits."""
    import bnext.models
    from bnext.data import load_tensors

    torch.manual_seed(0)
    if name == "resnet20":
        opts: dict = {}
        model = ResNet20(num_classes=10).eval()
        parts = [load_tensors("digits", split, input_size=32) for split in ("train", "test")]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        samples = args.samples
    else:
        opts = {"width": args.width} if name != "resnet18" else {}
        model = bnext.models.create(name, num_classes=10, input_size=32, **opts).eval()
        x, y = load_tensors("digits", "train", input_size=32)
        samples = args.samples or args.default_samples
    if samples:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:samples].sort().values
        x, y = x[idx], y[idx]
    return model, x.contiguous(), y.contiguous(), opts


class ReferenceLoop:
    """Li et al.'s evaluation of one point: ``p.data = w + (d0*x + d1*y)`` per parameter from the
    stored directions, then a DataLoader with batch 128 under ``torch.no_grad``, loss accumulated as
    ``loss.item() * batch``. Works on its own copy of the model."""

    def __init__(
        self, model: nn.Module, dirs: Directions, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
        device: str = "cpu",
    ):
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).eval().to(self.device)
        self.params = list(self.model.parameters())
        names = [n for n, _ in self.model.named_parameters()]
        self.weights = [p.data.clone() for p in self.params]
        self.dx = [dirs.x[n].to(self.device) for n in names]
        self.dy = [dirs.y[n].to(self.device) for n in names]
        self.loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)

    def __call__(self, a: float, b: float) -> tuple[float, float]:
        changes = [d0 * float(a) + d1 * float(b) for d0, d1 in zip(self.dx, self.dy)]
        for p, w, d in zip(self.params, self.weights, changes):
            p.data = w + d.type(w.dtype)
        total_loss, correct, total = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in self.loader:
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                outputs = self.model(inputs)
                loss = F.cross_entropy(outputs, targets)
                total_loss += loss.item() * inputs.size(0)
                correct += outputs.max(1)[1].eq(targets).sum().item()
                total += inputs.size(0)
        return total_loss / total, 100.0 * correct / total


def load_info(where: str) -> float:
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    print(f"load average {where}: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({cores} cores)", flush=True)
    if load > cores:
        print(f"WARNING: load average {load:.1f} exceeds the {cores} cores: other jobs share the CPU, "
              "ratios are unreliable (rerun on a quiet machine)", flush=True)
    return load


def differences(a: dict, b: dict) -> tuple[float, float]:
    """Max relative loss difference and max accuracy difference (points) over the entries of a and b."""
    rel = max((abs(a[k][0] - b[k][0]) / max(abs(b[k][0]), 1e-12) for k in a), default=0.0)
    acc = max((abs(a[k][1] - b[k][1]) for k in a), default=0.0)
    return rel, acc


def layer_seconds(
    modules: nn.Module, evaluate: Callable, point: tuple[float, float]
) -> tuple[dict[str, tuple[str, float]], float]:
    """``{conv name: (kind, CPU seconds)}`` of one ``evaluate(*point)`` and its total, at 1 thread, timed with
    the calling thread's CPU clock (a second run; the first warms up). Convs are ``nn.Conv2d`` and the
    engine's wrappers (kind: the wrapper's ``last_algorithm`` or the class name)."""
    convs = {m: n for n, m in modules.named_modules()
             if isinstance(m, nn.Conv2d) or hasattr(m, "last_algorithm")}
    inner = {id(m.conv) for m in convs if hasattr(m, "last_algorithm") and hasattr(m, "conv")}
    convs = {m: n for m, n in convs.items() if id(m) not in inner}
    acc: dict[str, float] = {}
    started: dict[nn.Module, float] = {}

    def pre(m: nn.Module, _inp: object) -> None:
        started[m] = time.thread_time()

    def post(m: nn.Module, _inp: object, _out: object) -> None:
        acc[convs[m]] = acc.get(convs[m], 0.0) + time.thread_time() - started[m]

    threads = torch.get_num_threads()
    handles = [h for m in convs for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    torch.set_num_threads(1)  # every kernel runs on the calling thread (Winograd: one worker = this thread)
    try:
        evaluate(*point)
        acc.clear()
        t0 = time.thread_time()
        evaluate(*point)
        total = time.thread_time() - t0
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
    kinds = {n: str(getattr(m, "last_algorithm", None) or type(m).__name__) for m, n in convs.items()}
    return {n: (kinds[n], acc[n]) for n in acc}, total


def print_layers(name: str, reference: ReferenceLoop, engine: SurfaceEngine) -> dict:
    """Per-conv CPU seconds of one point, reference loop vs engine (see :func:`layer_seconds`)."""
    if engine.forward_factory is not None:
        print(f"[{name}] --layers: the engine runs a provider's forward ({engine.settings['forward']}); "
              "per-layer times are for torch forwards only")
        return {}
    ref, ref_total = layer_seconds(reference.model, reference, (0.25, -0.25))
    eng, eng_total = layer_seconds(engine._forward, lambda a, b: engine.evaluate(a, b), (0.25, -0.25))
    print(f"[{name}] per layer, CPU seconds of one point at 1 thread (reference batch 128 NCHW | engine batch "
          f"{engine.batch_size}):")
    for n in dict.fromkeys(list(ref) + list(eng)):
        r, e = ref.get(n, ("-", float("nan"))), eng.get(n, ("-", float("nan")))
        print(f"  {n:<28} {r[1]:7.3f} | {e[1]:7.3f} {e[0]}")
    rc, ec = sum(v for _, v in ref.values()), sum(v for _, v in eng.values())
    print(f"  {'convs':<28} {rc:7.3f} | {ec:7.3f}\n  {'rest (BN, ReLU, adds, loss)':<28} {ref_total - rc:7.3f} | "
          f"{eng_total - ec:7.3f}\n  {'total':<28} {ref_total:7.3f} | {eng_total:7.3f}  "
          f"ratio {ref_total / eng_total:.2f}x")
    return {"reference": {n: v for n, (_, v) in ref.items()}, "engine": {n: list(v) for n, v in eng.items()},
            "total_s": {"reference": ref_total, "engine": eng_total}}


def bench(name: str, args: argparse.Namespace, deadline: float) -> dict:
    model, x, y, opts = model_and_data(name, args)
    # BN statistics from the subset, as after training: a fresh network in eval mode has identity
    # statistics, so activations explode through the residual stages (losses ~1e4-1e6 for binary
    # models) and the comparison would be meaningless
    recalibrate_bn(model, x)
    dirs = random_directions(model, seed=0, normalization="filter", bias_bn="ignore")
    xs = parse_grid(f"-1:1:{args.grid}")
    ys = parse_grid(f"-1:1:{args.grid}")
    points = [(i, j) for i in range(len(xs)) for j in range(len(ys))]
    print(f"[{name}] {sum(p.numel() for p in model.parameters()):,} parameters, {len(x)} samples, "
          f"{len(xs)}x{len(ys)} grid, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    data = {"train": (x, y)}
    t0 = time.perf_counter()
    reference = ReferenceLoop(model, dirs, x, y, device=args.device)
    setup_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = SurfaceEngine(model, dirs, data, device=args.device).open()  # the defaults: nothing else
    setup_eng = time.perf_counter() - t0
    contenders = {"ref": reference, "eng": lambda a, b: tuple(engine.evaluate(a, b).values())}
    if args.bf16:  # its own copy: two open engines on one model would share its parameters
        bf16 = SurfaceEngine(copy.deepcopy(model), dirs, data, device=args.device, precision="bf16").open()
        contenders["bf16"] = lambda a, b: tuple(bf16.evaluate(a, b).values())
    times: dict[str, list[float]] = {k: [] for k in contenders}
    vals: dict[str, dict] = {k: {} for k in contenders}
    bar = tqdm(total=len(points), desc=name, unit="pt", leave=False, disable=args.no_progress)
    for k, (i, j) in enumerate(points):
        if k and time.perf_counter() > deadline:
            break
        order = list(contenders) if k % 2 == 0 else list(reversed(contenders))
        for which in order:
            t0 = time.perf_counter()
            vals[which][(i, j)] = contenders[which](xs[i], ys[j])
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[which].append(time.perf_counter() - t0)
        bar.update()
    bar.close()
    settings = dict(engine.settings)
    layers = print_layers(name, reference, engine) if args.layers else None
    engine.close()
    if args.bf16:
        bf16.close()
    done = len(times["ref"])
    # noise floor: the unfused float model at batch 128 vs 512, at 2 of the points done
    floor_pts = [list(vals["ref"])[0], list(vals["ref"])[-1]] if done > 1 else list(vals["ref"])
    floor_vals = []
    for batch in (128, 512):
        with SurfaceEngine(model, dirs, data, device=args.device, exact=True, forward="torch", batch_size=batch) as e:
            floor_vals.append({p: tuple(e.evaluate(xs[p[0]], ys[p[1]]).values()) for p in floor_pts})
    floor = differences(floor_vals[1], floor_vals[0])
    rel, acc = differences(vals["eng"], vals["ref"])
    ok = rel <= TOLERANCE["loss_rel"] and acc <= TOLERANCE["acc_points"]
    t_ref = setup_ref + sum(times["ref"])
    t_eng = setup_eng + sum(times["eng"])
    r = {
        "model": name, "width": opts.get("width", 1.0), "samples": len(x), "points": done,
        "points_planned": len(points), "engine_settings": settings,
        "ref_s_per_point": {"min": min(times["ref"]), "median": float(np.median(times["ref"]))},
        "eng_s_per_point": {"min": min(times["eng"]), "median": float(np.median(times["eng"]))},
        "setup_s": {"ref": setup_ref, "eng": setup_eng},
        "ref_pps": done / t_ref, "eng_pps": done / t_eng, "ratio": t_ref / t_eng,
        "ratio_min": min(times["ref"]) / min(times["eng"]),
        "ratio_median": float(np.median(times["ref"]) / np.median(times["eng"])),
        "max_rel_loss_diff": rel, "max_acc_diff": acc, "within_tolerance": ok, "layers_cpu_s": layers,
        "noise_floor": {"batch": [128, 512], "points": len(floor_pts), "max_rel_loss_diff": floor[0],
                        "max_acc_diff": floor[1]},
    }
    print(f"[{name}] engine: forward {settings['forward']}, batch {settings['batch_size']}, BN folded pairs "
          f"{settings['bn_folded_pairs']}, channels_last {settings['channels_last']}")
    print(f"[{name}] (a) reference loop: {r['ref_pps']:.3f} points/s; (b) engine defaults: {r['eng_pps']:.3f} "
          f"points/s; ratio {r['ratio']:.2f}x (per point min {r['ratio_min']:.2f}x, median "
          f"{r['ratio_median']:.2f}x) over {done}/{len(points)} points", flush=True)
    print(f"[{name}] agreement: max rel loss diff {rel:.2e}, max acc diff {acc:.2f} points -> "
          f"{'within' if ok else 'OUTSIDE'} the contract; noise floor (float model, batch 128 vs 512): "
          f"{floor[0]:.2e}, {floor[1]:.2f} points", flush=True)
    if args.bf16:
        brel, bacc = differences(vals["bf16"], vals["ref"])
        r["bf16"] = {"pps": len(times["bf16"]) / sum(times["bf16"]), "max_rel_loss_diff": brel, "max_acc_diff": bacc,
                     "ratio_median": float(np.median(times["ref"]) / np.median(times["bf16"]))}
        print(f"[{name}] bf16: {r['bf16']['pps']:.3f} points/s (median ratio {r['bf16']['ratio_median']:.2f}x), "
              f"max rel loss diff {brel:.2e}, max acc diff {bacc:.2f} points", flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated (default resnet18,bnext18,bireal18; "
                   "cuda: resnet18,bnext18)")
    p.add_argument("--grid", type=int, default=None, help="points per axis of the [-1,1]^2 grid (default 4, quick 2)")
    p.add_argument("--samples", type=int, default=None, help="digits samples (default 512 training "
                   "digits, quick 128; resnet20: all 1,797 train+test digits)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of binary models (default 1.0)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--bf16", action="store_true", help="also time the engine with precision='bf16'")
    p.add_argument("--quick", action="store_true", help="2x2 grid, 128 samples, ~40 s")
    p.add_argument("--budget", type=float, default=None, help="seconds for the grids (default 170, quick 40)")
    p.add_argument("--json", default="runs/benchmarks/landscape_speed.json", help="results file")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--layers", action="store_true", help="also print CPU seconds per conv layer of one point "
                   "(reference vs engine, 1 thread)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    args.grid = args.grid or (2 if args.quick else 4)
    args.default_samples = 128 if args.quick else 512
    short = args.quick or args.device.startswith("cuda")
    default_models = "resnet18,bnext18" if short else "resnet18,bnext18,bireal18"
    models = [m for m in (args.models or default_models).split(",") if m]
    budget = args.budget or (40.0 if args.quick else 170.0)
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    start = time.perf_counter()
    out = {"device": args.device, "gpu": gpu, "threads": args.threads, "budget_s": budget,
           "load_start": load_info("at start"), "models": []}
    for k, m in enumerate(models):
        deadline = start + budget * (k + 1) / len(models)
        out["models"].append(bench(m, args, deadline))
    out["load_end"] = load_info("at end")
    out["total_s"] = time.perf_counter() - start
    print(f"\n{'model':<10} {'width':>5} {'points':>6} {'ref pts/s':>10} {'engine pts/s':>12} {'ratio':>7} "
          f"{'median':>7} {'rel loss':>9} {'noise floor':>11} {'contract':>8}")
    for r in out["models"]:
        print(f"{r['model']:<10} {r['width']:>5} {r['points']:>6} {r['ref_pps']:>10.3f} {r['eng_pps']:>12.3f} "
              f"{r['ratio']:>6.2f}x {r['ratio_median']:>6.2f}x {r['max_rel_loss_diff']:>9.1e} "
              f"{r['noise_floor']['max_rel_loss_diff']:>11.1e} {'ok' if r['within_tolerance'] else 'NO':>8}")
    print(f"total {out['total_s']:.0f} s (budget {budget:.0f} s for the grids{'; GPU ' + gpu if gpu else ''})")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
