"""Sweeps on a cluster: one submitit job per grid point, job ids next to the points, status, resubmission.

``python -m bnext.ablate NOTEBOOK ... --executor slurm`` submits every point that is not finished
(nor queued or running) as one job of a Slurm array (:mod:`bnext.ablate.slurm` builds the executor);
``<run-dir>/job.json`` records the job id (and the earlier ones). A job runs
:class:`PointJob`, i.e. the same :func:`bnext.ablate.runner.execute_point` as the local runner. With
several tasks per job (``gpus_per_node`` > 1 or ``nodes`` > 1) every task runs the notebook with the
``torch.distributed`` variables of :func:`bnext.train.distributed.export_submitit_env` set, so the
trainings it starts are one DistributedDataParallel run; task 0 owns the point's files, the other
tasks keep their executed notebook and log under ``<run-dir>/ranks/rank-<k>/`` and their
``write_result`` is a no-op. A preempted or timed-out job is requeued by submitit
(:meth:`PointJob.checkpoint`) and the notebook's trainings continue from their ``last.pt``
(:func:`bnext.ablate.tasks.train` resumes a run of the same recipe).

:func:`point_state` tells ``pending``, ``queued``, ``running``, ``done``, ``failed`` or
``cancelled`` from the point's files, its lock and submitit's view of the job (``sacct`` on Slurm).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..io import pid_alive
from . import slurm
from .guard import lock_holder
from .results import atomic_write_json
from .runner import (
    KERNEL_NAME,
    PARAMS_FILE,
    RunOutcome,
    SweepReport,
    _execute_locked,
    check_overwrite,
    execute_point,
    is_complete,
    prepare,
)

JOB_FILE = "job.json"
SUBMITIT_FOLDER = ".submitit"
#: Slurm states (sacct) of jobs that are still to run or running
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


class PointJob:
    """What a submitit job runs: one grid point (picklable; ``checkpoint`` makes it requeue itself)."""

    def __init__(self, notebook: str, run_dir: str, parameters: Mapping[str, Any], *, timeout: float | None = None,
                 cwd: str | None = None, kernel_name: str = KERNEL_NAME):
        self.notebook, self.run_dir, self.parameters = notebook, run_dir, dict(parameters)
        self.timeout, self.cwd, self.kernel_name = timeout, cwd, kernel_name

    def __call__(self) -> dict[str, Any]:
        from bnext.train.distributed import export_submitit_env

        env = export_submitit_env()  # several tasks: every one runs the notebook, its trainings join one group
        rank = int(env.get("RANK", "0"))
        run_dir = Path(self.run_dir)
        cwd = Path(self.cwd) if self.cwd else None
        if rank == 0:
            outcome = execute_point(Path(self.notebook), run_dir, self.parameters, timeout=self.timeout, cwd=cwd,
                                    kernel_name=self.kernel_name)
        else:
            from .guard import PointLock

            files = run_dir / "ranks" / f"rank-{rank}"
            with PointLock(files) as lock:
                outcome = _execute_locked(Path(self.notebook), run_dir, self.parameters, lock, timeout=self.timeout,
                                          cwd=cwd, kernel_name=self.kernel_name, python=None, extra_env=None,
                                          files_dir=files)
        return asdict(outcome)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Preemption or time limit: run the point again in the requeued job (its trainings resume from last.pt)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(PointJob(self.notebook, self.run_dir, self.parameters, timeout=self.timeout,
                                          cwd=self.cwd, kernel_name=self.kernel_name))


# ----------------------------------------------------------------------------- job records
def read_job(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(run_dir) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("job_id") else None


def record_job(run_dir: Path, job: Any, cluster: str) -> None:
    """Write ``job.json`` (this job id, where submitit keeps its files, the earlier job ids)."""
    old = read_job(run_dir) or {}
    history = old.get("history")
    history = list(history) if isinstance(history, list) else []  # a hand-edited or damaged record
    if old.get("job_id"):
        history.append(old["job_id"])
    atomic_write_json(Path(run_dir) / JOB_FILE, {
        "job_id": str(job.job_id), "cluster": cluster, "folder": str(job.paths.folder),
        "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
        "submitted": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "history": history,
    })



def job_state(record: Mapping[str, Any]) -> str:
    """submitit's (Slurm's) state of a recorded job: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...;
    ``UNKNOWN`` when it cannot be asked; local jobs: RUNNING while their controller process lives."""
    cluster = record.get("cluster")
    job_id = str(record["job_id"])
    if cluster == "slurm":
        try:
            import submitit

            state = submitit.SlurmJob(record["folder"], job_id).state
        except Exception:  # noqa: BLE001 - no sacct here, a purged job, ...
            return "UNKNOWN"
        return str(state).split()[0].upper()
    if cluster == "local":
        return "RUNNING" if job_id.isdigit() and pid_alive(int(job_id)) else "FINISHED"
    return "FINISHED"


def _log_tail(path: str | os.PathLike[str] | None, lines: int) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class PointState:
    run_id: str
    state: str  # pending | queued | running | done | failed | cancelled
    detail: str = ""
    job_id: str | None = None
    log_tail: str = ""


def point_state(run_dir: Path, parameters: Mapping[str, Any], *, tail: int = 5) -> PointState:
    """Where a point stands (see the module docstring); ``failed`` carries the last ``tail`` log lines."""
    rid = Path(run_dir).name
    record = read_job(run_dir)
    job_id = record.get("job_id") if record else None
    if is_complete(run_dir, parameters):
        return PointState(rid, "done", job_id=job_id)
    holder = lock_holder(run_dir)
    if holder is not None:
        return PointState(rid, "running", f"PID {holder}" if holder > 0 else "", job_id)
    state = job_state(record) if record else None
    if state in _QUEUED:
        return PointState(rid, "queued", state.lower(), job_id)
    if state in _RUNNING:
        return PointState(rid, "running", "", job_id)
    failure_path = Path(run_dir) / "failure.json"
    if failure_path.is_file():
        try:
            failure = json.loads(failure_path.read_text())
        except ValueError:
            failure = {"message": "unreadable failure.json"}
        where = failure.get("cell_index")
        detail = " ".join(str(failure.get(k, "")) for k in ("status", "error", "message")).strip()
        if where is not None:
            detail += f" (cell {where})"
        log = failure.get("log_tail") or _log_tail(Path(run_dir) / "log.txt", tail)
        return PointState(rid, "failed", detail, job_id, "\n".join(str(log).rstrip().splitlines()[-tail:]))
    if record is not None:
        if state is not None and state.startswith("CANCELLED"):
            return PointState(rid, "cancelled", state.lower(), job_id, _log_tail(record.get("stderr"), tail))
        if state not in ("UNKNOWN", None):  # the job ended without a result or a failure record
            return PointState(rid, "failed", f"job {job_id} ended ({state.lower()}) without a result",
                              job_id, _log_tail(record.get("stderr"), tail))
        return PointState(rid, "pending", f"job {job_id}: state unknown", job_id)
    return PointState(rid, "pending", "not started")


def sweep_status(notebook: str | os.PathLike[str], grid: Mapping[str, Any], out: str | os.PathLike[str], *,
                 tail: int = 5) -> list[PointState]:
    """:func:`point_state` of every point of the grid."""
    _, points = prepare(notebook, grid)
    out = Path(out).resolve()
    return [point_state(out / rid, point, tail=tail) for rid, point in points]


def format_status(states: list[PointState]) -> str:
    """One line per point (failed ones followed by their log's last lines) and a count per state."""
    lines = []
    for s in states:
        job = f" [job {s.job_id}]" if s.job_id else ""
        lines.append(f"{s.state:9s} {s.run_id}{job}{': ' + s.detail if s.detail else ''}")
        if s.state in ("failed", "cancelled") and s.log_tail:
            lines += [f"    | {line}" for line in s.log_tail.splitlines()]
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- submission
def _progress(items: list, wait: bool) -> Any:
    """A bar on stderr over the jobs while waiting for them (plain iteration when not waiting)."""
    if not wait or not items:
        return items
    from ..cli import progress

    return progress(items, desc="jobs finished", unit="job")


def submit_sweep(
    notebook: str | os.PathLike[str],
    grid: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    conf: Mapping[str, Any] | None = None,
    cluster: str = "slurm",
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
    kernel_name: str = KERNEL_NAME,
    force: bool = False,
    overwrite: bool = False,
    wait: bool = False,
    summarize: bool = True,
) -> SweepReport:
    """Submit every point that is neither done (unless ``force``) nor queued/running as one job array.

    Failed and cancelled points are submitted again. With ``wait`` the call returns when every job
    ended (outcomes ``ok``/``failed``...), else at once (outcome ``submitted``; ``queued`` for points
    already in the queue). Folders holding other parameters are refused unless ``overwrite``.
    """
    nb, points = prepare(notebook, grid)
    out = Path(out).resolve()
    if not overwrite:
        check_overwrite(out, points)
    out.mkdir(parents=True, exist_ok=True)
    report = SweepReport(nb, out)
    todo = []
    for rid, point in points:
        state = point_state(out / rid, point)
        if state.state == "done" and not force:
            report.outcomes.append(RunOutcome(rid, point, "skipped"))
        elif state.state in ("queued", "running"):
            report.outcomes.append(RunOutcome(rid, point, "queued", job_id=state.job_id))
        else:
            todo.append((rid, point))
    jobs = []
    if todo:
        executor = slurm.make_executor(out / SUBMITIT_FOLDER / "%j", conf or {}, name=f"ablate-{nb.stem}",
                                       cluster=cluster)
        work = str(Path(cwd).resolve() if cwd is not None else Path.cwd())
        for rid, point in todo:  # the folder is claimed now: a later sweep with other parameters is refused
            (out / rid).mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / rid / PARAMS_FILE, point)
        with executor.batch():
            for rid, point in todo:
                jobs.append(executor.submit(PointJob(str(nb), str(out / rid), point, timeout=timeout, cwd=work,
                                                     kernel_name=kernel_name)))
        for (rid, _), job in zip(todo, jobs):
            record_job(out / rid, job, cluster)
    if todo:
        from ..cli import note

        ids = [str(j.job_id) for j in jobs]
        note(f"submitted {len(jobs)} job(s) to {cluster} ({ids[0]}{f' .. {ids[-1]}' if len(ids) > 1 else ''}) "
             f"for {nb.name}" + ("; waiting for them" if wait else "; not waiting (--wait waits)"))
    waiting = _progress(list(zip(todo, jobs)), wait)
    for (rid, point), job in waiting:
        if not wait:
            report.outcomes.append(RunOutcome(rid, point, "submitted", job_id=str(job.job_id)))
            continue
        try:
            result = dict(job.result())
            result["job_id"] = str(job.job_id)
            report.outcomes.append(RunOutcome(**result))
        except Exception as exc:  # noqa: BLE001 - the job itself failed (not the notebook)
            failure = {"status": "error", "message": f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1]}"}
            report.outcomes.append(RunOutcome(rid, point, "error", failure=failure, job_id=str(job.job_id)))
    order = {rid: i for i, (rid, _) in enumerate(points)}
    report.outcomes.sort(key=lambda o: order[o.run_id])
    if summarize and (wait or not todo):
        from .summary import write_summary

        report.summary = write_summary(out)
    return report
