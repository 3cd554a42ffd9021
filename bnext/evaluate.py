"""``python -m bnext.evaluate CHECKPOINT_OR_BNX``: loss, top-1 and top-5 of a checkpoint or a packed model.

Examples::

    python -m bnext.evaluate runs/digits_bnext18/checkpoints/best.pt
    python -m bnext.evaluate model.bnx --data digits --split test --json

A workbench checkpoint (``bnext.models.load``) or a ``.bnx`` packed model (``bnext.packed.load``)
is evaluated in eval mode on a whole split (default ``test``) at the model's recorded input size.
Both refuse inputs of another spatial size with a clear error (``--input-size`` that differs from
the model's), since the zoo's globally pooled models would otherwise answer silently and badly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli import ArgumentParser

if TYPE_CHECKING:
    from torch import nn


def load_any(path: str | Path, *, threads: int | None = None) -> tuple[nn.Module, dict[str, Any], str]:
    """A checkpoint's model or a packed ``.bnx`` model: ``(model, spec, kind)`` with kind ``checkpoint``/``packed``.

    The kind is decided by the file's content (a ``.bnx`` is a zip archive), not its name.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a workbench checkpoint .pt or a packed .bnx)")
    if path.suffix == ".bnx" or (zipfile.is_zipfile(path) and not _is_torch_zip(path)):
        from .packed import DEFAULT_THREADS, load

        packed = load(path, threads=threads or DEFAULT_THREADS)
        return packed, dict(packed.spec), "packed"
    from .models import load as load_checkpoint

    model = load_checkpoint(path)
    return model.eval(), dict(model.spec), "checkpoint"


def _is_torch_zip(path: Path) -> bool:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return any(n.endswith("data.pkl") for n in z.namelist())


def eval_batches(data: str, split: str, input_size: int, root: str | None, batch_size: int) -> list:
    """The split as a list of ``(inputs, targets)`` batches (in memory where the data set allows)."""
    from .data import load_tensors

    try:
        x, y = load_tensors(data, split, input_size=input_size, root=root)
    except ValueError as exc:
        if "does not hold" not in str(exc):
            raise
        from torch.utils.data import DataLoader

        from .data import get_dataset

        return DataLoader(get_dataset(data, split, root=root, input_size=input_size), batch_size=batch_size)
    return [(x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)]


def evaluate_file(
    path: str | Path,
    *,
    data: str = "digits",
    split: str = "test",
    input_size: int | None = None,
    data_root: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Loss (mean cross-entropy), top-1 and top-5 (percent) of a checkpoint or ``.bnx`` on a split.

    ``input_size`` defaults to the model's own; another size raises ``ValueError`` (from the model).
    """
    from .train.engine import evaluate

    model, spec, kind = load_any(path)
    size = int(input_size or spec["input_size"])
    if size != spec["input_size"]:  # refused before the data are resized (100000x100000 images: terabytes)
        want = spec["input_size"]
        raise ValueError(f"--input-size {size}: input images are {size}x{size} but this model was trained for "
                         f"{want}x{want} inputs; drop --input-size or pass {want}")
    batches = eval_batches(data, split, size, data_root, batch_size)
    t0 = time.perf_counter()
    out = evaluate(model if kind == "packed" else model.to(device), batches, device="cpu" if kind == "packed"
                   else device, progress=progress)
    return {
        "path": str(path),
        "kind": kind,
        "model": spec["name"],
        "data": data,
        "split": split,
        "input_size": size,
        "samples": int(out["count"]),
        "loss": out["loss"],
        "top1": out["top1"],
        "top5": out["top5"],
        "seconds": time.perf_counter() - t0,
    }


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bnext.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="workbench checkpoint (.pt) or packed model (.bnx)")
    p.add_argument("--data", default="digits", help="data set name (default digits)")
    p.add_argument("--data-root", default=None, help="data folder for cifar10/cifar100/imagenet")
    p.add_argument("--split", default="test", help="train or test (default test)")
    p.add_argument("--input-size", type=int, default=None, help="input size (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu or cuda (checkpoints; packed models run on the CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = evaluate_file(args.path, data=args.data, split=args.split, input_size=args.input_size,
                               data_root=args.data_root, batch_size=args.batch_size, device=args.device,
                               progress=not args.json and sys.stderr.isatty())
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['path']} ({result['kind']} {result['model']}) on {result['data']} {result['split']} "
              f"({result['samples']} images at {result['input_size']}x{result['input_size']}):")
        print(f"  loss {result['loss']:.4f}   top-1 {result['top1']:.2f}%   top-5 {result['top5']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
