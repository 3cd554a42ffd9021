"""Where a packed BNext forward spends its time: packed convs, fused float passes, what still runs in torch.

    python -m bnext.packed.fused_profile                        # bnext18, width 1.0, 512 digits 32x32, batch 32
    python -m bnext.packed.fused_profile --threads 2 --wall     # 2 threads, wall-clock instead of CPU time

Times the landscape engine's forward (``pack(model, fuse_float=True)``) on digits with BN statistics from
train-mode forwards, by wrapping the pieces it calls; with ``--unfused`` the packed model without fused float
parts.  CPU time (``time.process_time``, the default) is what the pieces cost whatever else runs on the machine;
the load average is printed with the table.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ..cli import ArgumentParser


def profile(name: str = "bnext18", width: float = 1.0, samples: int = 512, batch: int = 32, threads: int = 1,
            wall: bool = False, fused: bool = True, repeats: int = 3) -> tuple[float, dict[str, float]]:
    """``(total seconds of one pass over the samples, seconds per piece)``, the fastest of ``repeats`` passes."""
    import torch

    import bnext.models
    from bnext.data import load_tensors
    from landscape.bn import recalibrate_bn

    from . import fused_bnext, pack
    from .layers import PackedBinaryConv2d

    clock = time.perf_counter if wall else time.process_time
    torch.set_num_threads(threads)
    times: dict[str, float] = defaultdict(float)
    restore: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, key: Callable[..., str] | str) -> None:
        original = getattr(owner, attr)
        restore.append((owner, attr, original))

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return original(*args, **kwargs)
            finally:
                times[key(*args) if callable(key) else key] += clock() - t

        setattr(owner, attr, timed)

    torch.manual_seed(0)
    model = bnext.models.create(name, num_classes=10, input_size=32, width=width).eval()
    x, _ = load_tensors("digits", "train", input_size=32)
    x = x[:samples].contiguous()
    recalibrate_bn(model, x)
    packed = pack(model, fuse_float=fused, threads=threads)
    wrap(fused_bnext, "module_float", lambda phase, y, *a: f"fused float passes, planes {tuple(y.shape)}")
    wrap(fused_bnext, "prelu_avgpool2x2", "fused PReLU + 2x2 pool of strided shortcuts")
    wrap(PackedBinaryConv2d, "conv_packed", "packed binary convs")
    wrap(PackedBinaryConv2d, "pack_input", "binarize + pack conv inputs")
    for m in packed.model.modules():
        if type(m).__name__ == "PooledProjection":
            wrap(m[-2], "forward", "torch: real 1x1 projection convs")
    for attr in ("stem", "head"):
        if hasattr(packed.model, attr):
            wrap(getattr(packed.model, attr), "forward", f"torch: {attr}")
    best: tuple[float, dict[str, float]] | None = None
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                times.clear()
                t0 = clock()
                for s in range(0, samples, batch):
                    packed(x[s : s + batch])
                total = clock() - t0
                if best is None or total < best[0]:
                    best = (total, dict(times))
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)
    assert best is not None
    return best


def main() -> None:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bnext18")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--batch", type=int, default=32, help="the engine's batch (default 32: its rule at 32x32)")
    p.add_argument("--threads", type=int, default=1, help="numba and torch threads (default 1)")
    p.add_argument("--wall", action="store_true", help="wall-clock time instead of the process's CPU time")
    p.add_argument("--unfused", action="store_true", help="the packed model without fused float parts")
    args = p.parse_args()
    if args.samples < 1 or args.batch < 1 or args.threads < 1:
        raise SystemExit("--samples, --batch and --threads must be positive")
    total, parts = profile(args.model, args.width, args.samples, args.batch, args.threads, args.wall,
                           not args.unfused)
    kind = "wall" if args.wall else "CPU"
    print(f"{args.model} width {args.width}, {args.samples} digits 32x32, batch {args.batch}, {args.threads} "
          f"thread(s): {1e3 * total:.0f} ms {kind} per pass; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    rest = total - sum(parts.values())
    for key, value in sorted(parts.items(), key=lambda kv: -kv[1]) + [("rest (torch modules not listed, glue)",
                                                                      rest)]:
        print(f"  {1e3 * value:8.1f} ms {100 * value / total:5.1f}%  {key}")


if __name__ == "__main__":
    main()
