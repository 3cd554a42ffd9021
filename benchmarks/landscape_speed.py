"""Loss-landscape speed: the reference tool's per-point loop vs the ``landscape`` engine, one process.

For each model the same 2D grid (filter-normalized random directions, seed 0) is evaluated

(a) the way Li et al.'s tool does it: for every point ``p.data = w + x*dx + y*dy`` from the stored
    per-parameter directions, then a DataLoader with batch 128 over the subset, ``torch.no_grad``,
    loss accumulated as ``loss.item() * batch``;
(b) with :class:`landscape.engine.SurfaceEngine` (cached tensors, inference mode, in-place flat
    buffers, BatchNorm folded, batch size tuned once (64..512), channels_last, and for binary models
    the packed XNOR forward of ``bnext.packed`` when it exists),

interleaved point by point so that load changes on a shared machine affect both alike.

It checks that the surfaces agree (relative loss difference <= 1e-5, accuracy within one sample)
and prints points/s of each and the ratio. Targets on 2 CPU cores: >= 1.5x for resnet18 and >= 5x
for bnext18 (the latter needs the packed engine).

    python benchmarks/landscape_speed.py                      # resnet18 and bnext18, 11x11 grid
    python benchmarks/landscape_speed.py --grid 5 --models bnext18
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from landscape.directions import Directions, random_directions
from landscape.engine import SurfaceEngine
from landscape.grid import parse_grid


class ReferenceLoop:
    """Li et al.'s evaluation of one point: ``p.data = w + (d0*x + d1*y)`` per parameter from the
    stored directions, then a DataLoader with batch 128 under ``torch.no_grad``, loss accumulated as
    ``loss.item() * batch``. Works on its own copy of the model."""

    def __init__(
        self, model: nn.Module, dirs: Directions, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128
    ):
        self.model = copy.deepcopy(model).eval()
        self.params = list(self.model.parameters())
        names = [n for n, _ in self.model.named_parameters()]
        self.weights = [p.data.clone() for p in self.params]
        self.dx = [dirs.x[n] for n in names]
        self.dy = [dirs.y[n] for n in names]
        self.loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)

    def __call__(self, a: float, b: float) -> tuple[float, float]:
        changes = [d0 * float(a) + d1 * float(b) for d0, d1 in zip(self.dx, self.dy)]
        for p, w, d in zip(self.params, self.weights, changes):
            p.data = w + d.type(w.dtype)
        total_loss, correct, total = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in self.loader:
                outputs = self.model(inputs)
                loss = F.cross_entropy(outputs, targets)
                total_loss += loss.item() * inputs.size(0)
                correct += outputs.max(1)[1].eq(targets).sum().item()
                total += inputs.size(0)
        return total_loss / total, 100.0 * correct / total


def packed_factory(model: nn.Module, probe: torch.Tensor):
    """The CLI's packed forward factory (``bnext.packed``), or ``(None, reason)`` when unavailable."""
    try:
        from bnext.packed import PackedForward

        factory = PackedForward()
    except ImportError as exc:
        return None, f"bnext.packed not available ({exc})"
    try:
        with torch.inference_mode():
            ref = model.eval()(probe)
            err = float((factory(model)(probe) - ref).abs().max())
    except Exception as exc:  # noqa: BLE001
        return None, f"bnext.packed.pack failed ({exc.__class__.__name__}: {exc})"
    if err > 1e-4 * max(1.0, float(ref.abs().max())):
        return None, f"packed forward differs by {err:.3g}"
    return factory, "packed XNOR forward"


def calibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> None:
    """Set BN running statistics from the subset (cumulative average), as after training.

    A freshly initialized network in eval mode has identity BN statistics, so activations and logits
    explode through the residual stages (losses ~1e4-1e6 for binary models), which makes the
    comparison meaningless; calibrating once at the centre gives a well-conditioned model to time.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            model(x[s : s + batch_size])
    model.eval()


def bench(name: str, args: argparse.Namespace) -> dict[str, float]:
    import bnext.models
    from bnext.data import load_tensors

    opts = {"width": args.width} if name != "resnet18" else {}
    torch.manual_seed(0)
    model = bnext.models.create(name, num_classes=10, input_size=32, **opts).eval()
    x, y = load_tensors("digits", "train", input_size=32)
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[: args.samples].sort().values
    x, y = x[idx].contiguous(), y[idx]
    calibrate_bn(model, x)
    dirs = random_directions(model, seed=0, normalization="filter", bias_bn="ignore")
    xs = parse_grid(f"-1:1:{args.grid}")
    ys = parse_grid(f"-1:1:{args.grid}")
    n = len(xs) * len(ys)
    opts_engine = {
        "batch_size": args.batch_size,
        "channels_last": not args.no_channels_last,
        "compile": args.compile,
    }
    label = "torch forward, BN folded"
    if name != "resnet18" and not args.no_packed:
        factory, label = packed_factory(model, x[:8])
        if factory is not None:
            opts_engine["forward_factory"] = factory
            opts_engine["channels_last"] = False  # the packed model owns its layout
        else:
            print(
                f"[{name}] {label}: the engine runs the float model (the 5x target needs the packed engine)"
            )
            label = "torch forward (no packed engine)"
            opts_engine["fuse_bn"] = False  # folding changes rounding, which flips signs in binary nets

    print(
        f"[{name}] {sum(p.numel() for p in model.parameters()):,} parameters, {len(x)} samples, "
        f"{len(xs)}x{len(ys)} grid, {torch.get_num_threads()} threads",
        flush=True,
    )
    # The two are interleaved point by point (alternating which goes first), so that load changes on a
    # shared machine hit both alike; engine set-up (tracing, folding, batch tuning) counts as engine time.
    shape = (len(xs), len(ys))
    ref = {"train_loss": np.full(shape, np.nan), "train_acc": np.full(shape, np.nan)}
    got = {"train_loss": np.full(shape, np.nan), "train_acc": np.full(shape, np.nan)}
    t0 = time.perf_counter()
    reference = ReferenceLoop(model, dirs, x, y)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = SurfaceEngine(model, dirs, {"train": (x, y)}, device="cpu", **opts_engine).open()
    t_eng = time.perf_counter() - t0
    bar = tqdm(total=n, desc=name, unit="pt", leave=False, disable=args.no_progress)
    for k, (i, j) in enumerate((i, j) for i in range(len(xs)) for j in range(len(ys))):
        for which in ("ref", "eng") if k % 2 == 0 else ("eng", "ref"):
            t0 = time.perf_counter()
            if which == "ref":
                ref["train_loss"][i, j], ref["train_acc"][i, j] = reference(xs[i], ys[j])
                t_ref += time.perf_counter() - t0
            else:
                vals = engine.evaluate(xs[i], ys[j])
                got["train_loss"][i, j], got["train_acc"][i, j] = vals["train_loss"], vals["train_acc"]
                t_eng += time.perf_counter() - t0
        bar.update()
    bar.close()
    t0 = time.perf_counter()
    batch = engine.batch_size
    engine.close()
    t_eng += time.perf_counter() - t0
    print(f"[{name}] (a) reference loop: {t_ref:.1f} s, {n / t_ref:.3f} points/s", flush=True)
    extras = (", channels_last" if opts_engine["channels_last"] else "") + (
        ", compile" if args.compile else ""
    )
    print(
        f"[{name}] (b) landscape engine ({label}, batch {batch}{extras}): {t_eng:.1f} s, "
        f"{n / t_eng:.3f} points/s",
        flush=True,
    )
    rel = float(
        np.max(np.abs(got["train_loss"] - ref["train_loss"]) / np.maximum(np.abs(ref["train_loss"]), 1e-12))
    )
    acc = float(np.max(np.abs(got["train_acc"] - ref["train_acc"])))
    one_sample = 100.0 / len(x)
    ok = rel <= 1e-5 and acc <= one_sample + 1e-9
    ratio = t_ref / t_eng
    print(
        f"[{name}] surfaces agree: {'yes' if ok else 'NO'} (max relative loss difference {rel:.2e}, "
        f"max accuracy difference {acc:.3f} points; one sample = {one_sample:.3f})"
    )
    print(f"[{name}] speed-up: {ratio:.2f}x", flush=True)
    return {"ref_pps": n / t_ref, "eng_pps": n / t_eng, "ratio": ratio, "agree": float(ok)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,bnext18", help="comma-separated (default resnet18,bnext18)")
    p.add_argument("--grid", type=int, default=11, help="points per axis of the [-1,1]^2 grid (default 11)")
    p.add_argument("--samples", type=int, default=512, help="digits training samples (default 512)")
    p.add_argument(
        "--width", type=float, default=0.25, help="width multiplier of binary models (default 0.25)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument(
        "--batch-size",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="engine batch size (default auto: fastest of 64..512, timed once)",
    )
    p.add_argument("--compile", action="store_true", help="also torch.compile the engine's forward")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-packed", action="store_true", help="do not use bnext.packed for binary models")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {m: bench(m, args) for m in args.models.split(",") if m}
    print("\nmodel        reference pts/s   engine pts/s   ratio   agree")
    for m, r in results.items():
        agree = "yes" if r["agree"] else "NO"
        print(f"{m:<12} {r['ref_pps']:>15.3f} {r['eng_pps']:>14.3f} {r['ratio']:>7.2f}x   {agree}")


if __name__ == "__main__":
    main()
