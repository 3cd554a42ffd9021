"""``python -m landscape compute ... --executor slurm --shards N``: the grid as a submitit job array.

Each job runs the same ``compute`` with ``--shard I/N`` into its own part file (resumable: a
preempted job requeues itself and continues its part), then the parts are merged into ``--out``
(:func:`landscape.merge.merge_parts`). Slurm settings come from the ``--slurm-*`` options
(:mod:`bnext.ablate.slurm`); ``--submitit-cluster local`` runs the jobs on this machine.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ShardJob:
    """What one job of the array runs: ``compute`` of one shard (``checkpoint`` requeues it)."""

    def __init__(self, args: argparse.Namespace, run: Callable[[argparse.Namespace], int]):
        self.args = args
        self.run = run  # ``landscape.cli.compute.run``, passed in (this module never imports compute)

    def __call__(self) -> int:
        from bnext.train.distributed import export_submitit_env

        export_submitit_env()  # several tasks per job: the shard's points spread over them (torch.distributed)
        code = self.run(self.args)
        if code:
            raise RuntimeError(f"compute --shard {self.args.shard} exited with status {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(ShardJob(self.args, self.run))


def submit_shards(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """Submit ``args.shards`` jobs that each call ``run`` on their shard, wait, merge the parts."""
    from bnext.ablate import slurm

    from ..merge import merge_parts, part_path
    from .outputs import default_out as _default_out

    n = args.shards
    if not n or n < 1:
        raise ValueError("--executor slurm needs --shards N (N >= 1 jobs)")
    if args.shard:
        raise ValueError("--shard and --executor slurm exclude each other (the executor sets each job's shard)")
    ndim = 1 if args.y is None else 2
    out = (Path(args.out) if args.out else _default_out(args, args.directions, ndim)).resolve()
    try:
        executor = slurm.make_executor(out.parent / ".submitit" / "%j", slurm.settings(None, args),
                                       name=f"landscape-{out.stem}", cluster=args.submitit_cluster)
    except slurm.SlurmSettingsError as exc:
        raise ValueError(str(exc)) from None
    jobs = []
    with executor.batch():
        for i in range(1, n + 1):
            shard = copy.copy(args)
            shard.executor, shard.shard, shard.out, shard.plot, shard.no_progress = "local", f"{i}/{n}", str(out), \
                False, True
            jobs.append(executor.submit(ShardJob(shard, run)))
    print(f"submitted {n} shard job(s): {', '.join(str(j.job_id) for j in jobs)}; waiting for them", flush=True)
    failed = []
    for i, job in enumerate(jobs, 1):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - report every failed shard, merge what exists
            failed.append(i)
            print(f"shard {i}/{n} (job {job.job_id}) failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
    parts = [part_path(out, i, n) for i in range(1, n + 1) if part_path(out, i, n).is_file()]
    if not parts:
        raise ValueError(f"no shard wrote its part file next to {out}")
    report = merge_parts(parts, out, overwrite=args.overwrite)
    print(f"merged {len(parts)} part(s) into {report.path}: {report.done} of {report.total} points")
    if not report.complete or failed:
        print(f"{len(report.missing)} point(s) missing; rerun the same command to resubmit (parts resume)",
              file=sys.stderr)
        return 1
    if args.plot:
        from ..figures.plot import plot_all

        for kind, p in plot_all(report.path).items():
            print(f"  {kind}: {p}")
    return 0
