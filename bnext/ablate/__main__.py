"""``python -m bnext.ablate NOTEBOOK [--grid FILE.yaml] [name=[v1,v2] ...] [--out DIR] [--timeout S] [--jobs N]``.

Runs the notebook once per grid point (papermill, one process each) into ``DIR/<run-id>/`` and
writes ``DIR/summary.csv``, ``summary.md`` (the paper-style table, mean ± std over seeds) and
``summary.png``. Exit status 0 when every point completed, 1 when some failed (recorded in their
``failure.json``), 2 for a bad command line or grid (nothing was run). With ``--executor slurm``
each point is one submitit job (see :mod:`bnext.ablate.cluster`); ``--status`` prints where every
point stands. A folder holding a run with other parameters is never overwritten without ``--overwrite``.

Example::

    python -m bnext.ablate notebooks/module_ablation.ipynb \\
        info_rcp=[true,false] elm_attention=[true,false] seed=[0,1,2] --out runs/module_ablation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import ArgumentParser
from . import slurm
from .grid import GridError, load_grid_file, parse_assignments
from .runner import run_sweep


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bnext.ablate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook", help="notebook with a cell tagged 'parameters'")
    p.add_argument("assignments", nargs="*", metavar="name=[v1,v2]",
                   help="parameter values (YAML); a list is swept, a scalar is fixed; wrap a list in [] to "
                        "pass it as one value")
    p.add_argument("--grid", help="YAML file mapping parameter names to values or lists (command line wins)")
    p.add_argument("--out", help="sweep folder (default runs/<notebook name>)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    p.add_argument("--force", action="store_true", help="rerun points that already completed")
    p.add_argument("--overwrite", action="store_true",
                   help="replace runs in --out that were made with other parameters (refused otherwise)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="local: worker processes on this machine (default); slurm: one submitit job per point")
    p.add_argument("--status", action="store_true",
                   help="print each point's state (pending, queued, running, done, failed with its log's last "
                        "lines) and exit")
    p.add_argument("--wait", action="store_true",
                   help="with --executor slurm: wait for the jobs and write the summary (default: submit and exit)")
    p.add_argument("--cwd", default=None, help="working directory of the kernels (default: the current one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    slurm.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        grid = load_grid_file(args.grid) if args.grid else {}
        block = grid.pop("slurm") if isinstance(grid.get("slurm"), dict) else None
        cli = parse_assignments(args.assignments)
        grid.update(cli)
        out = Path(args.out) if args.out else Path("runs") / Path(args.notebook).stem
        if args.jobs < 1:
            raise GridError(f"--jobs must be at least 1, got {args.jobs}")
        if args.timeout is not None and args.timeout <= 0:
            raise GridError(f"--timeout must be positive, got {args.timeout}")
        if args.status:
            from .cluster import format_status, sweep_status

            print(format_status(sweep_status(args.notebook, grid, out)))
            return 0
        if args.executor == "slurm":
            from .cluster import submit_sweep

            report = submit_sweep(args.notebook, grid, out, conf=slurm.settings(block, args),
                                  cluster=args.submitit_cluster, timeout=args.timeout, cwd=args.cwd, force=args.force,
                                  overwrite=args.overwrite, wait=args.wait)
        else:
            report = run_sweep(args.notebook, grid, out, timeout=args.timeout, jobs=args.jobs, cwd=args.cwd,
                               force=args.force, overwrite=args.overwrite, progress=not args.no_progress)
    except (GridError, slurm.SlurmSettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the running points were stopped (rerun the same command to continue)", file=sys.stderr)
        return 130
    n = len(report.outcomes)
    if report.count("submitted") or report.count("queued"):
        print(f"{n} point(s): {report.count('submitted')} submitted, {report.count('queued')} already queued or "
              f"running, {report.count('skipped')} already complete; follow them with --status")
        for o in report.outcomes:
            if o.status == "submitted":
                print(f"  {o.run_id}: job {o.job_id}")
        return 0
    print(f"{n} run(s): {report.count('ok')} ran, {report.count('skipped')} already complete, "
          f"{len(report.failed)} failed")
    for o in report.failed:
        if o.status == "busy":
            print(f"  BUSY {o.run_id}: {o.failure['message'] if o.failure else 'running elsewhere'}")
            continue
        where = o.failure.get("cell_index") if o.failure else None
        print(f"  FAILED {o.run_id} ({o.status}{f', cell {where}' if where is not None else ''}): "
              f"see {report.out / o.run_id / 'failure.json'}")
    for kind, path in report.summary.items():
        print(f"{kind}: {path}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
