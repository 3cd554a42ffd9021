"""``python -m landscape hessian``: curvature of a checkpoint (top eigenvalues, trace, density, sharpness,
eigenvalue maps) into ``runs/<name>/hessian[_real].json`` (and the surface file for ``--x/--y``).

The bnext glue: models come from ``bnext.models.load``, data from ``bnext.data.load_tensors``, and
``--params real`` keeps every parameter that :func:`bnext.nn.is_binary_weight` does not name (BN,
PReLU, shifts, SE, recoupling, stem, head). For models with binary layers the numbers are the
curvature of the straight-through surrogate (see :mod:`landscape.curvature.hessian`); the result says so.
:func:`checkpoint_curvature` serves the demo table and the notebooks.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import store

if TYPE_CHECKING:
    from torch import nn

STE_NOTE = (
    "the model has binary layers: its loss is piecewise constant in the latent weights, so these are the "
    "curvature of the straight-through surrogate that training follows (sign replaced by its STE "
    "linearization; bnext.nn binarizers support double backward), not of the binarized loss"
)


def param_selector(model: nn.Module, which: str) -> Any:
    """``"all"`` or a predicate keeping the real-valued parameters (``which="real"``)."""
    if which == "all":
        return "all"
    if which != "real":
        raise ValueError(f"--params must be 'all' or 'real', got {which!r}")
    from bnext.nn import is_binary_weight

    def real(name: str, _p: Any) -> bool:
        return not is_binary_weight(model, name)

    return real


def _bar(desc: str, total: int, enabled: bool, unit: str = "hvp") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


def curvature(
    model: nn.Module,
    data: Any,
    *,
    top_k: int = 1,
    tol: float = 1e-3,
    max_iter: int | None = None,
    probes: int = 0,
    params: str = "all",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Top eigenvalues (and the trace when ``probes``) of a bnext model; flat keys for tables."""
    from ..curvature.hessian import Hessian
    from .compute import _has_binary_layers

    h = Hessian(model, data, params=param_selector(model, params), batch_size=batch_size)
    row: dict[str, Any] = {"hessian_params": params, "hessian_dim": h.dim, "hessian_samples": h.n}
    t0 = time.perf_counter()
    bar = _bar("top eigenvalues", max_iter or min(h.dim, max(50, 10 * top_k)), progress)
    eig = h.top_eigenvalues(top_k, tol=tol, max_iter=max_iter, seed=seed, progress=lambda i: bar.update(i - bar.n))
    bar.close()
    row.update({"top_eig": eig.values[0], "top_eigs": eig.values, "eig_residuals": eig.residuals,
                "eig_converged": eig.converged, "eig_agreement": eig.agreement, "eig_starts": eig.starts,
                "eig_hvps": eig.hvps, "eig_seconds": round(eig.seconds, 3)})
    if probes:
        bar = _bar("trace (Hutchinson)", probes, progress)
        tr = h.trace(probes, seed=seed, progress=lambda i: bar.update(i - bar.n))
        bar.close()
        row.update({"trace": tr.estimate, "trace_stderr": tr.stderr, "trace_probes": tr.probes,
                    "trace_seconds": round(tr.seconds, 3)})
    row["hessian_seconds"] = round(time.perf_counter() - t0, 3)
    row["surrogate"] = STE_NOTE if _has_binary_layers(model) else None
    return row


def checkpoint_curvature(
    checkpoint: str | Path,
    *,
    data: str = "digits",
    data_root: str | None = None,
    split: str = "train",
    samples: int = 128,
    data_seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """:func:`curvature` of a checkpoint on a seeded subset of a split (the demo's and notebooks' entry)."""
    from bnext.ablate.tasks import eval_tensors
    from bnext.models import load

    model = load(checkpoint).eval()
    x, y = eval_tensors(data, split, input_size=model.spec["input_size"], data_root=data_root, samples=samples,
                        seed=data_seed)
    return curvature(model, (x, y), **options)


def _out_dir(args: argparse.Namespace) -> Path:
    from .outputs import run_folder

    return Path(args.out_dir) if args.out_dir else run_folder(args.checkpoint, args.model, args.name)


def _basis_dir(value: str | None) -> str | None:
    """``--basis-dir``: folder of a basis above the limit (default the system's temporary folder; 'none': refuse)."""
    if value is None:
        import tempfile

        return tempfile.gettempdir()
    return None if value.lower() == "none" else value


def run(args: argparse.Namespace) -> int:
    # idle OpenMP threads sleep instead of spinning (read when torch loads; as bnext.demo does): spinning
    # threads made products many times slower on a shared 2-core machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from ..curvature.hessian import Hessian, plot_density
    from ..grid import parse_grid
    from .compute import _has_binary_layers, load_data, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.top_k < 0 or args.probes < 2 or args.subset < 0 or args.starts < 1 or args.eig_iter < 1:
        raise ValueError("--top-k must be >= 0, --probes >= 2, --subset >= 0, --starts >= 1 and --eig-iter >= 1")
    if (args.x is None) != (args.y is None) and args.y is not None:
        raise ValueError("--y needs --x (an eigenvalue map is 1D with --x alone, 2D with both)")
    xc = parse_grid(args.x, "x") if args.x else None
    yc = parse_grid(args.y, "y") if args.y else None
    from ..objectives import make_objectives

    objectives = make_objectives(args.loss, args.metric)  # a bad spec fails before any work
    if not objectives.loss.differentiable:
        raise ValueError(f"--loss {args.loss!r} has no gradient; the Hessian needs a differentiable loss")
    if xc is not None and objectives.loss.spec != "ce":
        raise ValueError("--x/--y eigenvalue maps are of the cross-entropy surface; drop --loss or the map")
    model, meta = load_model(args)
    args.splits = [args.split]
    input_size = args.input_size if not args.checkpoint else meta["model"].get("input_size", args.input_size)
    data, data_spec = load_data(args, input_size)
    selector = param_selector(model, args.params)
    binary = _has_binary_layers(model)
    progress = not args.no_progress
    out_dir = _out_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "hessian" if args.params == "all" else f"hessian_{args.params}"
    loss_fn = objectives.loss.batch_mean if objectives.loss.spec != "ce" else None
    max_basis = None if args.max_basis_gb <= 0 else int(args.max_basis_gb * 2**30)
    h = Hessian(model, data, params=selector, batch_size=args.batch_size, loss_fn=loss_fn, max_basis_bytes=max_basis,
                basis_dir=_basis_dir(args.basis_dir))  # the Lanczos basis is estimated up front, kept on disk above
    # the limit (the page cache, not the process, holds it: BNext-T's 6 GB basis leaves the RSS under 8 GiB)
    print(f"curvature of {meta['model'].get('name', 'model')} over {h.dim:,} {args.params} parameters on "
          f"{h.n} {args.split} samples ({'STE surrogate: binary layers' if binary else 'real-valued model'})",
          flush=True)
    result: dict[str, Any] = {
        "format": "landscape-hessian", "format_version": 1, "surrogate": STE_NOTE if binary else None,
        "settings": {**meta, "data": data_spec, "params": args.params, "parameters": h.dim, "seed": args.seed,
                     "batch_size": args.batch_size, "package_version": store.package_version(),
                     "loss": objectives.loss.spec, "metrics": [m.spec for m in objectives.metrics]},
        "loss": h.loss(),
    }
    if objectives.metrics:
        from ..curvature.hessian import as_dataset

        result["metrics"] = objectives.evaluate(model, *as_dataset(data), batch_size=args.batch_size)
        print("metrics: " + ", ".join(f"{k} {v:.5g}" for k, v in result["metrics"].items()))
    if args.per_block:
        result["per_block"] = _per_block(args, model, data, selector, loss_fn, out_dir, stem, progress)
    if args.top_k:
        iters = args.max_iter or min(h.dim, max(50, 10 * args.top_k))
        print(h.basis_estimate(iters), flush=True)
        bar = _bar("top eigenvalues (Lanczos)", args.starts * iters, progress)
        eig = h.top_eigenvalues(args.top_k, tol=args.tol, max_iter=args.max_iter, seed=args.seed, starts=args.starts,
                                progress=lambda i: bar.update(i - bar.n))
        bar.close()
        result["top_eigenvalues"] = eig.as_dict()
        many = "; equal within their bounds: " + ", ".join(
            "/".join(str(i + 1) for i in c) for c in eig.clusters) if eig.clusters else ""
        print(f"top {args.top_k} eigenvalues: {', '.join(f'{v:.5g}' for v in eig.values)}\n"
              f"  true residuals ||Hv - lv||: {', '.join(f'{r:.2g}' for r in eig.residuals)} "
              f"({'converged' if eig.converged else 'NOT converged'} at tol {eig.tol:g} x {eig.scale:.3g}); "
              f"{eig.starts} starts, agreement {eig.agreement:.2g}{many}; {eig.hvps} products, {eig.seconds:.1f} s")
    if args.trace:
        bar = _bar("trace (Hutchinson)", args.probes, progress)
        tr = h.trace(args.probes, seed=args.seed, progress=lambda i: bar.update(i - bar.n))
        bar.close()
        result["trace"] = tr.as_dict()
        print(f"trace: {tr.estimate:.5g} +- {tr.stderr:.2g} (standard error, {tr.probes} Rademacher probes, "
              f"{tr.seconds:.1f} s)")
    if args.density:
        bar = _bar("density (SLQ)", args.density_runs, progress, "run")
        dens = h.density(args.density_iter, args.density_runs, seed=args.seed,
                         progress=lambda i: bar.update(i - bar.n))
        bar.close()
        result["density"] = dens.as_dict()
        png = plot_density(dens, out_dir / f"{stem}_density.png",
                           title=f"Hessian eigenvalue density: {out_dir.name} ({args.params} parameters)")
        result["density"]["plot"] = str(png)
        print(f"density: {dens.nodes.shape[0]} x {dens.nodes.shape[1]} Lanczos nodes, plot {png}")
    if args.sharpness:
        from ..curvature.sharpness import epsilon_sharpness, random_sharpness

        bar = _bar("epsilon-sharpness", args.sharpness_steps, progress, "step")
        eps = epsilon_sharpness(model, data, epsilon=args.epsilon, steps=args.sharpness_steps, params=selector,
                                loss_fn=loss_fn,
                                batch_size=args.batch_size, seed=args.seed, progress=lambda i: bar.update(i - bar.n))
        bar.close()
        bar = _bar("random-direction sharpness", args.directions, progress, "dir")
        rnd = random_sharpness(model, data, radius=args.radius, directions=args.directions, params=selector,
                               loss_fn=loss_fn,
                               batch_size=args.batch_size, seed=args.seed, progress=lambda i: bar.update(i - bar.n))
        bar.close()
        result["epsilon_sharpness"], result["random_sharpness"] = eps.as_dict(), rnd.as_dict()
        print(f"epsilon-sharpness (eps={args.epsilon:g}): loss +{eps.increase:.4g} (Keskar {eps.keskar:.3g}%); "
              f"random directions (r={args.radius:g}, N={rnd.directions}): +{rnd.mean:.4g} "
              f"[{rnd.ci_low:.4g}, {rnd.ci_high:.4g}] ({100 * rnd.confidence:.0f}% CI)")
    if xc is not None:
        result["eigenvalue_map"] = _eig_map(args, model, data, meta, data_spec, selector, out_dir, xc, yc)
    out = out_dir / f"{stem}.json"
    from bnext.io import atomic_open

    with atomic_open(out, "w") as fh:
        json.dump(store._jsonable(result), fh, indent=2)
        fh.write("\n")
    print(f"result written to {out}")
    return 0


def _per_block(args: argparse.Namespace, model: nn.Module, data: Any, selector: Any, loss_fn: Any, out_dir: Path,
               stem: str, progress: bool) -> dict[str, Any]:
    """``--per-block``: top eigenvalue and trace per block (landscape.curvature.blocks), JSON, CSV and figure."""
    from ..curvature.blocks import block_curvature, parse_grouping

    bar = _bar("per-block curvature", 0, progress, "block")

    def tick(block: str, i: int, n: int) -> None:
        bar.total = n
        bar.set_postfix_str(block)
        bar.update(i - bar.n)

    report = block_curvature(model, data, parse_grouping(args.block) if args.block else args.blocks, params=selector,
                             loss_fn=loss_fn, probes=args.probes if args.trace else 0, tol=args.tol,
                             max_iter=args.max_iter, seed=args.seed, batch_size=args.batch_size, progress=tick)
    bar.close()
    report.settings.update({"params": args.params, "loss": args.loss})
    paths = report.write(out_dir / f"{stem}_blocks",
                         title=f"Hessian curvature per block: {out_dir.name} ({args.params} parameters)")
    print("\n".join(report.summary_lines()))
    print(f"per-block curvature: {paths['json']}, {paths['csv']}, {paths['figure']} (+ .pdf)")
    return {**report.as_dict(), "files": {k: str(v) for k, v in paths.items()}}


def _eig_map(args: argparse.Namespace, model: nn.Module, data: Any, meta: dict, data_spec: dict, selector: Any,
             out_dir: Path, xc: Any, yc: Any) -> dict[str, Any]:
    """The loss surface (computed or resumed) and its max/min eigenvalue maps in the same file."""
    from ..curvature.eigmap import compute_eig_map, plot_eig_ratio, read_eig_map
    from ..directions import random_directions
    from ..surface import compute_surface

    ndim = 1 if yc is None else 2
    path = Path(args.surface) if args.surface else out_dir / f"landscape_random_{ndim}d.h5"
    d = random_directions(model, ndim=ndim, seed=args.direction_seed, normalization="filter", bias_bn="ignore")
    surface_meta = {**meta, "data": data_spec, "forward": "torch", "note": ""}
    try:
        compute_surface(path, model, d, data, xc, yc, metadata=surface_meta, mode="resume",
                        progress=not args.no_progress, batch_size=max(args.batch_size, 256), fuse_bn=False)
    except store.SettingsMismatchError as exc:
        raise store.SettingsMismatchError(
            f"{exc}\n(The eigenvalue map needs a surface over its own data: pass --surface NEW.h5, or the "
            "--subset/--data-seed/--split and --direction-seed the existing surface was computed with.)"
        ) from None
    compute_eig_map(path, model, data, tol=args.eig_tol, max_iter=args.eig_iter, params=selector,
                    params_label=args.params, seed=args.seed, batch_size=args.batch_size, overwrite=args.overwrite_eig,
                    progress=not args.no_progress)
    png = plot_eig_ratio(path, title=f"|min/max| Hessian eigenvalue ratio: {out_dir.name} ({args.params})")
    m = read_eig_map(path)
    failed = int((m["done"] & (m["converged"] != 3)).sum())
    print(f"eigenvalue map: max_eig/min_eig in {path} ({failed} of {int(m['done'].sum())} points not converged "
          f"within {args.eig_iter} products at tol {args.eig_tol:g}), ratio plot {png}")
    return {"surface": str(path), "plot": str(png), "max_iter": args.eig_iter, "tol": args.eig_tol,
            "unconverged_points": failed}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``hessian`` subcommand."""
    c = sub.add_parser("hessian", help="Hessian eigenvalues, trace, density, sharpness and eigenvalue maps")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint written by bnext (runs/<name>/checkpoints/best.pt)")
    src.add_argument("--model", help="registry name: a freshly initialized model (seeded)")
    c.add_argument("--model-option", type=_option, action="append", metavar="KEY=VALUE",
                   help="option for --model, e.g. width=0.25 (repeatable)")
    c.add_argument("--num-classes", type=int, default=10, help="classes of a --model (default 10)")
    c.add_argument("--input-size", type=int, default=32, help="input size for --model (default 32)")
    c.add_argument("--init-seed", type=int, default=0, help="seed of a fresh --model's weights")
    c.add_argument("--data", default="digits", help="bnext.data data set name (default digits)")
    c.add_argument("--data-root", default=None, help="folder of a data set on disk (CIFAR, ImageNet)")
    c.add_argument("--split", default="train", help="split the loss is taken on (default train)")
    c.add_argument("--subset", type=int, default=256, help="samples, a seeded subset (0 = all; default 256)")
    c.add_argument("--data-seed", type=int, default=0, help="seed of the --subset choice")
    c.add_argument("--params", choices=["all", "real"], default="all",
                   help="all parameters, or the real-valued ones only (not the latent binary weights)")
    c.add_argument("--top-k", type=int, default=5, help="largest eigenvalues by Lanczos (0 = skip; default 5)")
    c.add_argument("--tol", type=float, default=1e-4, help="Lanczos residual tolerance (relative)")
    c.add_argument("--max-iter", type=int, default=None,
                   help="Lanczos products per start at most (default max(50, 10k))")
    c.add_argument("--starts", type=int, default=2,
                   help="Lanczos starts, each deflated against the last (finds repeated eigenvalues; default 2)")
    c.add_argument("--max-basis-gb", type=float, default=1.0,
                   help="a Lanczos basis above this size in GiB goes to disk (--basis-dir), or is refused with "
                        "--basis-dir none (0 = no limit; default 1: full ResNet-18 top-5 stays under 8 GiB)")
    c.add_argument("--basis-dir", default=None,
                   help="a Lanczos basis above --max-basis-gb goes to an unnamed temporary file in this folder "
                        "(default: the system's temporary folder; 'none' refuses it instead)")
    c.add_argument("--trace", action="store_true", help="Hutchinson trace with its standard error")
    c.add_argument("--probes", type=int, default=50, help="Rademacher probes for --trace (default 50)")
    c.add_argument("--density", action="store_true", help="eigenvalue density (SLQ) and its plot")
    c.add_argument("--density-iter", type=int, default=50, help="Lanczos products per density run (default 50)")
    c.add_argument("--density-runs", type=int, default=1, help="Rademacher starts of the density (default 1)")
    c.add_argument("--sharpness", action="store_true", help="epsilon-sharpness and random-direction sharpness")
    c.add_argument("--epsilon", type=float, default=1e-3, help="filter-normalized ball radius (default 1e-3)")
    c.add_argument("--sharpness-steps", type=int, default=10, help="ascent steps of epsilon-sharpness (default 10)")
    c.add_argument("--radius", type=float, default=0.1, help="random-direction radius (default 0.1)")
    c.add_argument("--directions", type=int, default=10, help="random directions (default 10)")
    c.add_argument("--loss", default="ce", metavar="SPEC",
                   help="loss the Hessian is taken of: ce (default), mse, label_smoothing:EPS or pkg.module:callable")
    c.add_argument("--metric", action="append", default=None, metavar="[NAME=]SPEC",
                   help="also report a metric at the checkpoint (repeatable): top5, ece, margin, a loss, pkg.mod:fn")
    c.add_argument("--per-block", action="store_true",
                   help="top eigenvalue (and with --trace the trace) per block: JSON, CSV and a figure against depth")
    c.add_argument("--blocks", choices=["auto", "children"], default="auto",
                   help="per-block grouping: auto (stages/blocks by module structure) or the top-level children")
    c.add_argument("--block", action="append", default=None, metavar="NAME=PREFIX[,PREFIX]",
                   help="your own per-block grouping by parameter-name prefixes (repeatable; the rest is 'other')")
    c.add_argument("--x", default=None, help="eigenvalue map: x grid min:max:num")
    c.add_argument("--y", default=None, help="eigenvalue map: y grid min:max:num")
    c.add_argument("--surface", default=None,
                   help="surface file for the map (default runs/<name>/landscape_random_2d.h5)")
    c.add_argument("--direction-seed", type=int, default=0, help="seed of the map's random directions")
    c.add_argument("--eig-iter", type=int, default=200,
                   help="Lanczos products per map point at most (default 200; unconverged points are flagged)")
    c.add_argument("--eig-tol", type=float, default=1e-4,
                   help="map: true residual of both extreme eigenvalues / spectral scale (default 1e-4)")
    c.add_argument("--overwrite-eig", action="store_true", help="recompute a map made with other settings")
    c.add_argument("--seed", type=int, default=0, help="seed of the Lanczos start, probes and directions")
    c.add_argument("--batch-size", type=int, default=256, help="samples per forward/backward (default 256)")
    c.add_argument("--out-dir", default=None, help="result folder (default: the checkpoint's run folder)")
    c.add_argument("--name", default=None, help="run name: results go to runs/<name>/")
    c.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (logs, batch jobs)")
    c.set_defaults(func=run)


def _option(text: str) -> tuple[str, Any]:
    from .compute import _parse_option

    return _parse_option(text)
