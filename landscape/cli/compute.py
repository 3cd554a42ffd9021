"""``python -m landscape compute``: evaluate a 1D or 2D loss surface into an HDF5 file.

The bnext glue lives here: models are rebuilt from checkpoints (``bnext.models.load``), evaluation
data come from ``bnext.data.load_tensors`` and binary models get the packed XNOR-popcount engine
(``bnext.packed``) as their forward. Heavy modules are imported when the command runs.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import store
from .custom import build_user_model, check_one_batch, is_import_path, load_user_data
from .outputs import default_out as _default_out

if TYPE_CHECKING:
    from torch import Tensor, nn


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"model option {text!r} must be KEY=VALUE, e.g. width=0.25")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def load_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    """The model (from ``--checkpoint``, a fresh seeded ``--model`` or ``--model module:callable``)."""
    if is_import_path(args.model):
        model, spec = build_user_model(args.model, dict(args.model_option or []), args.init_seed)
        meta = {"checkpoint_path": None, "checkpoint_sha256": None, "init_seed": args.init_seed, "model": spec}
        return model.eval(), meta
    import bnext.models
    import bnext.quant.apply  # noqa: F401  (registers the rebuild of post-training-quantized checkpoints)

    if args.checkpoint:
        model = bnext.models.load(args.checkpoint)
        meta = {
            "checkpoint_path": str(Path(args.checkpoint).resolve()),
            "checkpoint_sha256": store.file_sha256(args.checkpoint),
        }
    else:
        import torch

        torch.manual_seed(args.init_seed)
        model = bnext.models.create(
            args.model,
            num_classes=args.num_classes,
            input_size=args.input_size,
            **dict(args.model_option or []),
        )
        meta = {"checkpoint_path": None, "checkpoint_sha256": None, "init_seed": args.init_seed}
    meta["model"] = getattr(model, "spec", {"name": type(model).__name__})
    return model.eval(), meta


def load_data(
    args: argparse.Namespace, input_size: int
) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Any]]:
    """A fixed seeded subset of each requested split as tensors (and the whole sets, for calibration)."""
    import torch

    if is_import_path(args.data):
        full = load_user_data(args.data, args.splits)
    else:
        from bnext.data import load_tensors

        full = {s: load_tensors(args.data, s, input_size=input_size, root=args.data_root) for s in args.splits}
    args._full_data = full  # the calibration set is drawn from the whole train split
    data = {}
    for split in args.splits:
        x, y = full[split]
        if args.subset and args.subset < x.shape[0]:
            gen = torch.Generator().manual_seed(args.data_seed)
            idx = torch.randperm(x.shape[0], generator=gen)[: args.subset].sort().values
            x, y = x[idx], y[idx]
        data[split] = (x.contiguous(), y)
    spec = {
        "name": args.data,
        "root": args.data_root,
        "input_size": None if is_import_path(args.data) else input_size,
        "splits": list(args.splits),
        "subset": args.subset,
        "data_seed": args.data_seed,
    }
    return data, spec


def calibration_inputs(args: argparse.Namespace, input_size: int) -> Tensor:
    """A seeded subset (``--bn-samples``, ``--bn-seed``) of the training inputs for BN recalibration."""
    from ..bn import seeded_subset

    full = getattr(args, "_full_data", {})
    if "train" in full:
        x = full["train"][0]
    elif is_import_path(args.data):
        x = load_user_data(args.data, ["train"])["train"][0]
    else:
        from bnext.data import load_tensors

        x = load_tensors(args.data, "train", input_size=input_size, root=args.data_root)[0]
    return seeded_subset(x, args.bn_samples, args.bn_seed)


def _first_compile(model: nn.Module) -> bool:
    """Whether the fast path's numba kernels for this model have no on-disk cache yet (first run)."""
    import importlib
    import os

    names = ("bnext.packed.kernels", "bnext.packed.fused_passes") if _has_binary_layers(model) \
        else ("landscape.engine.winograd",)
    try:
        from numba.core.registry import CPUDispatcher

        kernels = [v for n in names for v in vars(importlib.import_module(n)).values()
                   if isinstance(v, CPUDispatcher) and hasattr(getattr(v, "_cache", None), "_cache_file")]
        files = [k._cache._cache_file._index_path for k in kernels]  # numba internals: read defensively
    except Exception:  # noqa: BLE001 - no numba, or its internals moved: say nothing
        return False
    return bool(files) and not any(os.path.exists(f) for f in files)


def _has_binary_layers(model: nn.Module) -> bool:
    try:
        from bnext.nn import BinaryConv2d
    except ImportError:
        return False
    return any(isinstance(m, BinaryConv2d) for m in model.modules())


def packed_forward_factory(
    model: nn.Module, probe: Tensor, *, required: bool
) -> Callable[[nn.Module], Callable[[Tensor], Tensor]] | None:
    """``bnext.packed``'s forward factory when it exists and reproduces the model on ``probe``."""
    try:
        from bnext.packed import packed_forward_factory as factory
    except ImportError as exc:
        if required:
            raise SystemExit(f"--forward packed: bnext.packed is not available ({exc})") from None
        return None
    try:
        return factory(model, probe, required=required)
    except RuntimeError as exc:
        raise SystemExit(f"--forward packed: {exc}") from None


def _init_distributed(device: str | None) -> str | None:
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu" if device is None else device


PLANE_GRID = "-0.5:1.5:21"


def _other_model(args: argparse.Namespace, path: str) -> Any:
    """Model B or C: a bnext checkpoint, or a state_dict file for your own ``--model module:callable``."""
    if is_import_path(args.model):
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        return state
    import bnext.models

    return bnext.models.load(path)


def _plane(args: argparse.Namespace, model: nn.Module, meta: dict[str, Any]) -> Any:
    """The plane through A (the model), B and C (Li et al.'s --model_file2/--model_file3)."""
    from ..directions import plane_directions

    if not (args.checkpoint_b and args.checkpoint_c):
        raise ValueError("--directions plane needs --checkpoint-b B and --checkpoint-c C (A is the model at (0, 0))")
    d = plane_directions(model, _other_model(args, args.checkpoint_b),
                         _other_model(args, args.checkpoint_c), orthogonalize=args.plane_orthogonal)
    meta["checkpoint_b_sha256"] = store.file_sha256(args.checkpoint_b)
    meta["checkpoint_c_sha256"] = store.file_sha256(args.checkpoint_c)
    a = d.info["anchors"]
    _say(f"plane through A (0, 0), B ({a['B'][0]:.3g}, {a['B'][1]:.3g}), C ({a['C'][0]:.3g}, {a['C'][1]:.3g}); "
         f"{d.info['axes']}")
    return d


def _say(text: str) -> None:
    """Print on rank 0 only (``torchrun`` sets RANK)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "executor", "local") == "slurm":  # a job array of shards, merged at the end
        from .cluster import submit_shards

        return submit_shards(args, run)
    import torch

    from .. import directions as dirs
    from ..grid import parse_grid
    from ..merge import parse_shard, part_path
    from ..store import read_surface
    from ..surface import compute_surface

    shard = parse_shard(args.shard) if getattr(args, "shard", None) else None  # a bad I/N fails before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.directions == "pca" and args.x is None and args.y is None:
        args.x = args.y = "auto"  # fit the grid to the projected trajectory
    if args.directions == "plane" and args.x is None and args.y is None:
        args.x = args.y = PLANE_GRID  # A, B and C with a margin
    from ..objectives import is_user_spec, make_objectives

    objectives = make_objectives(args.loss, args.metric)  # a bad spec fails before any work
    if args.x is None:
        args.x = "-1:1:21"
    for axis in ("x", "y"):  # fail on bad grid specs before any work
        spec = getattr(args, axis)
        if spec is not None and not spec.startswith("auto"):
            parse_grid(spec, axis)
    if args.bn_recalibrate:
        if args.bn == "interpolate":
            raise ValueError("--bn-recalibrate contradicts --bn interpolate; pass only --bn")
        args.bn = "recalibrate"
    device = _init_distributed(args.device)
    model, meta = load_model(args)
    input_size = args.input_size
    if args.checkpoint:
        input_size = meta["model"].get("input_size", args.input_size)
    data, data_spec = load_data(args, input_size)
    # before any file exists; built-in losses need class-index targets, a user loss may take any
    check_one_batch(model, data, class_targets=not is_user_spec(str(getattr(args, "loss", None) or "ce")))
    ndim = 1 if args.y is None else 2
    if args.directions == "random":
        d = dirs.random_directions(
            model, ndim=ndim, seed=args.seed, normalization=args.norm, bias_bn=args.bias_bn
        )
    elif args.directions == "interpolate":
        if not args.checkpoint_b:
            raise SystemExit("--directions interpolate needs --checkpoint-b (the model at x=1)")
        import bnext.models

        d = dirs.interpolation_direction(model, bnext.models.load(args.checkpoint_b))
        meta["checkpoint_b_sha256"] = store.file_sha256(args.checkpoint_b)
    elif args.directions == "plane":
        d = _plane(args, model, meta)
    elif args.directions == "pca":
        if not args.trajectory:
            raise SystemExit("--directions pca needs --trajectory FILE.h5 (saved by the trainer)")
        d = dirs.pca_directions(args.trajectory, model, bias_bn=args.bias_bn)
        meta["trajectory_sha256"] = store.file_sha256(args.trajectory)
        ratio = d.info["explained_variance_ratio"]
        _say(f"PCA of {d.info['snapshots']} snapshots: PC1 explains {100 * ratio[0]:.1f}%, "
              f"PC2 {100 * ratio[1]:.1f}% of the trajectory's variance")
    else:
        if not args.direction_file:
            raise SystemExit("--directions file needs --direction-file FILE.h5 (reference-tool layout)")
        d = dirs.read_reference(args.direction_file, model)
        meta["direction_file_sha256"] = store.file_sha256(args.direction_file)
    if d.ndim != ndim:
        raise SystemExit(
            f"the {args.directions} directions are {d.ndim}D but the grid is {ndim}D "
            f"({'drop --y' if d.ndim == 1 else 'add --y'})"
        )
    forward_factory = None
    if args.forward == "packed":  # required; "auto" lets the engine ask its providers (bnext.packed registers one)
        probe = next(iter(data.values()))[0][:16]
        forward_factory = packed_forward_factory(model, probe, required=True)
    elif args.forward == "auto" and _has_binary_layers(model):
        import bnext.packed.forward  # noqa: F401 - registers the packed forward provider
    from ..bn import has_batchnorm, resolve_bn_mode

    bn_mode = resolve_bn_mode(args.bn, d.kind)
    calibration = None
    if bn_mode == "recalibrate" and has_batchnorm(model):
        calibration = calibration_inputs(args, input_size)
        _say(f"BatchNorm statistics recalibrated at every point on {calibration.shape[0]} training "
              f"inputs (seed {args.bn_seed})")
    probe_x, probe_y = next(iter(data.values()))
    with torch.no_grad():  # a user's loss or metric that fails does so now, in one line, before any file
        objectives.check(model(probe_x[:8]), probe_y[:8])
    out = Path(args.out) if args.out else _default_out(args, args.directions, ndim)
    if shard is not None:
        out = part_path(out, *shard)
    mode = "overwrite" if args.overwrite else "new" if args.new_file else "resume"
    if not args.no_progress and not args.exact and _first_compile(model):
        _say("compiling kernels (first run only; they are cached on disk, about 30 s) ...")
    meta.update(
        {
            "data": data_spec,
            "forward": args.forward,
        }
    )
    meta["note"] = args.note or ""
    path = compute_surface(
        out,
        model,
        d,
        data,
        args.x,
        args.y,
        metadata=meta,
        mode=mode,
        bn=bn_mode,
        calibration_seed=args.bn_seed if calibration is not None else None,
        calibration=calibration,
        progress=not args.no_progress,
        device=device,
        batch_size=args.batch_size,
        exact=args.exact,
        forward="torch" if args.forward == "torch" else "auto",
        fuse_bn=False if args.no_fuse_bn else None,
        winograd=False if args.no_winograd else None,
        forward_factory=forward_factory,
        channels_last=True if args.channels_last else None,
        precision=args.precision,
        compile=args.compile,
        points_per_forward=args.points_per_forward,
        shard=shard,
        loss=objectives.loss,
        metrics=objectives.metrics,
    )
    import torch.distributed as dist

    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    print(f"surface written to {path}")
    bad = read_surface(path).attrs.get("nonfinite_points", 0)
    if bad:
        print(f"warning: {bad} grid point(s) hold non-finite values (see the warnings above)")
    if args.export_directions:
        print(f"directions exported to {dirs.write_reference(d, args.export_directions, model)}")
    if args.plot and shard is None:
        from ..figures.plot import plot_all

        for kind, p in plot_all(path).items():
            print(f"  {kind}: {p}")
    return 0




def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compute`` subcommand."""
    c = sub.add_parser("compute", help="evaluate a 1D or 2D loss surface into an HDF5 file")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint written by bnext (runs/<name>/checkpoints/best.pt)")
    src.add_argument(
        "--model",
        help="registry name (a freshly initialized zoo model, seeded) or your own model as an importable "
        "callable 'package.module:build' / 'file.py:build' returning an nn.Module",
    )
    c.add_argument(
        "--model-option",
        type=_parse_option,
        action="append",
        metavar="KEY=VALUE",
        help="option for --model, e.g. width=0.25 (repeatable)",
    )
    c.add_argument("--num-classes", type=int, default=10, help="classes for --model (default 10)")
    c.add_argument(
        "--input-size", type=int, default=32, help="input size for --model and the data (default 32)"
    )
    c.add_argument("--init-seed", type=int, default=0, help="initialization seed for --model")
    c.add_argument(
        "--data",
        default="digits",
        help="bnext.data data set name (default digits), or 'package.module:loaders', a callable returning "
        "{split: (inputs, targets)}, (inputs, targets) or a DataLoader",
    )
    c.add_argument("--data-root", default=None, help="data root for data sets on disk")
    c.add_argument(
        "--splits",
        type=lambda s: [v for v in s.split(",") if v],
        default=["train"],
        help="comma-separated splits to evaluate: train, test or train,test (default train)",
    )
    c.add_argument("--subset", type=int, default=512, help="samples per split, seeded subset (0 = all)")
    c.add_argument("--data-seed", type=int, default=0, help="seed of the subset choice")
    c.add_argument(
        "--x",
        default=None,
        help="x grid min:max:num (default -1:1:21; PCA: 'auto', the trajectory with a margin; 'auto:num')",
    )
    c.add_argument("--y", default=None, help="y grid min:max:num or auto[:num]; omit for a 1D surface")
    c.add_argument("--directions", choices=["random", "interpolate", "plane", "pca", "file"], default="random",
                   help="random (filter-normalized), interpolate (A to --checkpoint-b), plane (through A, "
                   "--checkpoint-b and --checkpoint-c), pca (--trajectory), file (--direction-file)")
    c.add_argument(
        "--norm",
        choices=["filter", "layer", "none"],
        default="filter",
        help="normalization of random directions (default filter, Li et al.)",
    )
    c.add_argument(
        "--bias-bn",
        choices=["ignore", "filter"],
        default="ignore",
        help="1-D tensors (biases, BN gamma/beta): zero direction or filter-normalized",
    )
    c.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    c.add_argument("--checkpoint-b", help="model at x=1 for --directions interpolate and plane")
    c.add_argument("--checkpoint-c", help="third model for --directions plane (at y=1)")
    c.add_argument("--plane-orthogonal", action="store_true",
                   help="plane: y = the part of C-A orthogonal to B-A (C at (c, 1)); default Li et al.'s oblique "
                   "axes B-A and C-A")
    c.add_argument("--loss", default="ce", metavar="SPEC",
                   help="loss stored as <split>_loss: ce (default), mse, label_smoothing:EPS or "
                   "package.module:callable (logits, targets) -> per-sample values or a batch mean")
    c.add_argument("--metric", action="append", default=None, metavar="[NAME=]SPEC",
                   help="extra metric stored as <split>_<name> (repeatable): top5, ece, margin, a loss, or "
                   "package.module:callable; top-1 accuracy is always stored as <split>_acc")
    c.add_argument("--trajectory", help="weight trajectory .h5 for --directions pca")
    c.add_argument("--direction-file", help="reference-tool direction file for --directions file")
    c.add_argument("--export-directions", help="also write the directions in the reference tool's layout")
    c.add_argument("--out", help="output .h5 (default runs/<name>/landscape_<directions>_<1d|2d>.h5)")
    c.add_argument("--name", help="run name for the default output folder")
    reuse = c.add_mutually_exclusive_group()
    reuse.add_argument(
        "--overwrite", action="store_true", help="replace an existing file with other settings"
    )
    reuse.add_argument(
        "--new-file", action="store_true", help="write <stem>-N.h5 instead of reusing the file"
    )
    c.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default cuda if available)")
    c.add_argument(
        "--batch-size",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="evaluation batch size (default auto: the deterministic rule of landscape.engine.batching)",
    )
    c.add_argument(
        "--exact",
        action="store_true",
        help="bit-identical to the model's own forward (no folding/channels-last, batch 128); default: the "
        "fast path within the tolerance contract (relative loss 5e-3, accuracy 0.5 points)",
    )
    c.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast the float parts (CPU/CUDA)"
    )
    c.add_argument(
        "--no-fuse-bn",
        action="store_true",
        help="do not fold BatchNorm into convolutions (default: folded where it reproduces the model)",
    )
    c.add_argument(
        "--no-winograd",
        action="store_true",
        help="run 3x3 convolutions with torch (default on the CPU: Winograd F(4x4,3x3) where the shape rule "
        "of landscape.engine.winograd pays and the probe agrees)",
    )
    c.add_argument(
        "--bn",
        choices=["recalibrate", "interpolate"],
        default=None,
        help="BatchNorm statistics at each point: recalibrate (re-estimated on --bn-samples training "
        "inputs; default for interpolate) or interpolate (moved with the directions; stored values for "
        "random/pca/file directions, the default there; refused where a variance turns negative)",
    )
    c.add_argument("--bn-samples", type=int, default=512, help="calibration inputs for --bn recalibrate (512)")
    c.add_argument("--bn-seed", type=int, default=0, help="seed of the calibration subset (default 0)")
    c.add_argument("--bn-recalibrate", action="store_true", help="same as --bn recalibrate")
    c.add_argument(
        "--forward",
        choices=["auto", "torch", "packed"],
        default="auto",
        help="auto: the packed XNOR engine for binary models when bnext.packed exists",
    )
    c.add_argument("--channels-last", action="store_true", help="force channels-last (default: on the CPU)")
    c.add_argument("--compile", action="store_true", help="torch.compile the forward")
    c.add_argument(
        "--points-per-forward",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="grid points per forward via vmap (default auto: 4 on CUDA, 1 on CPU where it is slower)",
    )
    c.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    c.add_argument("--note", default=None, help="free text stored with the file (not compared)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (logs, batch jobs)")
    c.add_argument("--plot", action="store_true", help="also write all figures after computing")
    c.add_argument("--shard", default=None, metavar="I/N",
                   help="compute every N-th point (coarse-to-fine order) from the I-th (I counts from 1: 1/2 and 2/2) "
                        "into <out stem>.part-I-of-N.h5 "
                        "(resumable; join the parts with 'landscape merge')")
    c.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="slurm: submit --shards jobs (a submitit job array), wait, and merge the parts into --out")
    c.add_argument("--shards", type=int, default=None, help="number of shards (jobs) for --executor slurm")
    try:
        from bnext.ablate import slurm
    except ImportError:  # landscape without bnext: no cluster options
        pass
    else:
        slurm.add_arguments(c)
    c.set_defaults(func=run)

