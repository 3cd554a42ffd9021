"""``python -m bnext.study CONFIG``: run a landscape study and write its table, forest plot and verdicts.

Runs every variant x training seed of the config (configs/studies/*.yaml) as a point of the ablation
runner (``--executor local``: worker processes here, ``slurm``: a job array, ``inline``: this process),
skipping finished points and resuming interrupted ones, then aggregates every surface and curvature
result: mean with a hierarchical-bootstrap interval per variant and metric, permutation tests over
training seeds with Holm's correction, rank probabilities and one verdict per claimed ordering.
Exit status 0 when every point is done, 1 when some failed (the report covers the finished ones),
2 for a bad config or command line (nothing was run). See docs/studies.md.
"""

from __future__ import annotations

import os

# idle OpenMP threads must sleep, not spin, on a shared machine (see bnext.demo); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from bnext.ablate import slurm

    from ..cli import ArgumentParser

    p = ArgumentParser(prog="python -m bnext.study", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="study YAML, e.g. configs/studies/fig2_digits.yaml")
    p.add_argument("--executor", choices=["local", "slurm", "inline"], default="local",
                   help="local: one worker process per point (default); slurm: one job per point; "
                        "inline: every point in this process")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="points in parallel (local)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per point (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per point before it is killed")
    p.add_argument("--out", default=None, help="study folder (default: the config's out, else runs/studies/<name>)")
    p.add_argument("--force", action="store_true", help="rerun points that already completed")
    p.add_argument("--overwrite", action="store_true",
                   help="accept a changed config: points are redone, reusing trained models and surfaces whose "
                        "settings did not change")
    p.add_argument("--report-only", action="store_true", help="run nothing; aggregate the finished points")
    p.add_argument("--status", action="store_true", help="print where every point stands and exit")
    p.add_argument("--wait", action="store_true", help="with --executor slurm: wait for the jobs, then report")
    p.add_argument("--no-progress", action="store_true")
    from landscape.figures.style import add_output_args

    add_output_args(p)
    slurm.add_arguments(p)
    return p


def report(cfg: Any, *, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150,
           contours: bool = True) -> dict[str, Any] | None:
    """Aggregate the finished points of ``cfg`` into its study folder (None when nothing finished)."""
    from .analysis import analyze
    from .config import METRICS
    from .report import write_report
    from .run import collect, variants_in

    rows, missing = collect(cfg)
    if not rows:
        return None
    variants = [v.key for v in cfg.variants if v.key in variants_in(rows)]
    labels = {v.key: v.label for v in cfg.variants}
    s = cfg.stats
    result = analyze(rows, variants, METRICS, claims=cfg.claims, reference=cfg.reference,
                     bootstrap=int(s["bootstrap"]), confidence=float(s["confidence"]), alpha=float(s["alpha"]),
                     permutations=int(s["permutations"]), seed=int(s["seed"]), test=str(s["test"]))
    result["missing_points"] = missing
    result["study"] = {"name": cfg.name, "config": cfg.path, "fingerprint": cfg.fingerprint(),
                       "settings": cfg.compute_settings(), "point_seconds": _point_seconds(cfg)}
    out = write_report(result, rows, cfg.out_dir, labels=labels, formats=formats, dpi=dpi, contours=contours)
    out["result"] = result
    return out


def _point_seconds(cfg: Any) -> float:
    """Compute time of the finished points (their result.json ``seconds``; a resumed point counts its last run)."""
    from .run import points_dir

    total = 0.0
    for path in points_dir(cfg).glob("*/result.json"):
        try:
            total += float(json.loads(path.read_text()).get("seconds") or 0.0)
        except (OSError, ValueError):
            continue
    return round(total, 1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bnext.ablate import slurm
    from bnext.ablate.grid import GridError

    from .config import StudyConfigError, load
    from .run import NOTEBOOK, grid, points_dir, run_study

    t0 = time.perf_counter()
    try:
        cfg = load(args.config)
        if args.out:
            cfg.out = args.out
        if args.jobs < 1 or args.threads < 1:
            raise StudyConfigError(f"--jobs and --threads must be at least 1, got {args.jobs} and {args.threads}")
        if args.status:
            from bnext.ablate.cluster import format_status, sweep_status

            print(format_status(sweep_status(NOTEBOOK, grid(cfg), points_dir(cfg))))
            return 0
        n_points = len(cfg.variants) * len(cfg.train_seeds)
        print(f"study {cfg.name}: {len(cfg.variants)} variants x {len(cfg.train_seeds)} training seeds = {n_points} "
              f"trained models, x {len(cfg.direction_seeds)} direction seeds x {len(cfg.data_seeds)} data subsets = "
              f"{n_points * len(cfg.direction_seeds) * len(cfg.data_seeds)} surfaces -> {cfg.out_dir}", flush=True)
        rep = None
        if not args.report_only:
            if args.executor == "local":
                os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the worker processes inherit it
            if args.executor == "inline":
                import torch

                torch.set_num_threads(args.threads)
            rep = run_study(cfg, executor=args.executor, jobs=args.jobs, threads=args.threads, timeout=args.timeout,
                            force=args.force, overwrite=args.overwrite, progress=not args.no_progress,
                            wait=args.wait, slurm_conf=slurm.settings(cfg.slurm, args),
                            cluster=args.submitit_cluster)
    except (StudyConfigError, GridError, slurm.SlurmSettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue (finished points are kept)", file=sys.stderr)
        return 130
    if rep is not None and (rep.count("submitted") or rep.count("queued")):
        print(f"{rep.count('submitted')} point(s) submitted, {rep.count('queued')} queued or running; follow them "
              f"with --status, then run with --report-only")
        return 0
    failed = rep.failed if rep is not None else []
    for o in failed:
        print(f"FAILED {o.run_id} ({o.status}): see {points_dir(cfg) / o.run_id / 'failure.json'}", file=sys.stderr)
    out = report(cfg, formats=args.formats, dpi=args.dpi)
    if out is None:
        print("no finished point to report yet", file=sys.stderr)
        return 1
    print_summary(out, cfg)
    print(f"wall time {time.perf_counter() - t0:.0f} s (points' compute time, this run and earlier ones: "
          f"{out['result']['study']['point_seconds']:.0f} s)")
    return 1 if failed or out["result"]["missing_points"] else 0


def print_summary(out: dict[str, Any], cfg: Any) -> None:
    from bnext.ablate.results import markdown_table

    print()
    print(out["caption"])
    print(markdown_table(out["table_rows"], out["columns"]))
    if out["verdicts"]:
        print("Verdicts (the paper's Fig. 2 orderings):")
        for line in out["verdicts"]:
            print(f"  - {line}")
    missing = out["result"]["missing_points"]
    if missing:
        more = " ..." if len(missing) > 4 else ""
        print(f"PARTIAL: {len(missing)} point(s) not finished: {', '.join(missing[:4])}{more}")
    paths = out["paths"]
    print(f"\ntable: {paths['table']['markdown']} (.tex, .csv); intervals: {paths['intervals']}; "
          f"pairwise tests: {paths.get('pairwise')}")
    print(f"forest plot: {paths['forest']}; contour panel (median-roughness surface per variant): "
          f"{paths.get('contours')}")
    print(f"verdicts: {paths['verdicts']}; every number: {paths['json']}")


if __name__ == "__main__":
    raise SystemExit(main())
