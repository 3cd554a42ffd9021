"""Batch execution of a notebook over a parameter grid with papermill, one process per run.

Every grid point runs in its own ``python -m bnext.ablate.worker`` process (papermill changes the
process-wide working directory, so runs cannot share a process), in its own session so that a
timeout kills the kernel too. Each run folder ``<out>/<run-id>/`` holds::

    params.json          the point (written before the run starts)
    <notebook>.ipynb     the executed notebook (papermill saves it after every cell)
    result.json          written by the notebook itself; a point is complete when this file exists
                         and its ``parameters`` match the point (reruns skip complete points)
    failure.json         when the run failed: status (failed|timeout|error), failing cell index and
                         source, error name, message and traceback
    log.txt              the worker's stdout/stderr
    .point.lock          flock held while a process runs the point (with its PID); a runner claims a point
                         by taking it and then checking result.json again, so two runners on one folder
                         share the work: none runs a point twice or deletes a result it did not write
    job.json             with ``--executor slurm``: the submitit job running the point

A sweep never writes into a folder whose ``params.json`` records other parameters unless asked to
(``overwrite=True``, CLI ``--overwrite``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import grid as grids
from .guard import PointBusyError, PointLock
from .results import atomic_write_json

KERNEL_NAME = "python3"
PARAMS_FILE = "params.json"
#: how a parameter left to the notebook's default shows in a difference
NOTEBOOK_DEFAULT = "(notebook default)"
#: worker processes running now (killed when the sweep is interrupted)
_LIVE: set[subprocess.Popen] = set()


@dataclass
class RunOutcome:
    run_id: str
    parameters: dict[str, Any]
    status: str  # ok | skipped | failed | timeout | error
    seconds: float = 0.0
    failure: dict[str, Any] | None = None
    job_id: str | None = None  # the submitit job (``--executor slurm``)


@dataclass
class SweepReport:
    notebook: Path
    out: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    summary: dict[str, Path] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status not in ("ok", "skipped", "submitted", "queued")]


def is_complete(run_dir: Path, parameters: Mapping[str, Any]) -> bool:
    """``result.json`` exists, is readable, and records the same value for every parameter of the point."""
    path = run_dir / "result.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    recorded = result.get("parameters") if isinstance(result, dict) else None
    if not isinstance(recorded, dict):
        return False
    want = grids.normalized(dict(parameters))
    have = grids.normalized(recorded)
    return all(k in have and have[k] == v for k, v in want.items())


def _running_cell(notebook: Path) -> dict[str, Any]:
    """Index and source of the cell papermill marked as running in a partly executed notebook."""
    try:
        import nbformat

        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:  # noqa: BLE001 - the notebook may not have been written yet
        return {}
    for i, cell in enumerate(nb.cells):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return {"cell_index": i, "cell_source": cell.get("source", "")}
    return {}


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def execute_point(
    notebook: Path,
    run_dir: Path,
    parameters: Mapping[str, Any],
    *,
    timeout: float | None = None,
    cwd: Path | None = None,
    kernel_name: str = KERNEL_NAME,
    python: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    force: bool = False,
    since: float | None = None,
) -> RunOutcome:
    """Execute one grid point in a fresh worker process; never raises for a failing notebook.

    The point is claimed atomically: its lock (:class:`bnext.ablate.guard.PointLock`) is taken, then
    ``result.json`` is checked again, and only then does the point run. A point whose lock is held
    elsewhere is not started (status ``busy``); one completed meanwhile by another runner is
    ``skipped`` (with ``force``: one whose result was written at or after ``since``, the time this
    sweep started, so two forced runners do not run a point twice or delete each other's result).
    The lock is held by this process and the worker for the whole run; the worker dies with this
    process (:func:`bnext.ablate.guard.die_with_parent`).
    """
    run_id = run_dir.name
    try:
        lock = PointLock(run_dir).acquire()
    except PointBusyError as exc:
        return RunOutcome(run_id, dict(parameters), "busy", 0.0, {"status": "busy", "message": str(exc)})
    try:
        if _completed_elsewhere(run_dir, parameters, force=force, since=since):
            return RunOutcome(run_id, dict(parameters), "skipped")
        return _execute_locked(notebook, run_dir, parameters, lock, timeout=timeout, cwd=cwd,
                               kernel_name=kernel_name, python=python, extra_env=extra_env)
    finally:
        lock.release()


def _completed_elsewhere(run_dir: Path, parameters: Mapping[str, Any], *, force: bool, since: float | None) -> bool:
    """Under the point's lock: is there a matching result this runner must keep (see :func:`execute_point`)?"""
    if not is_complete(run_dir, parameters):
        return False
    if not force:
        return True
    try:
        return since is not None and (run_dir / "result.json").stat().st_mtime >= since
    except OSError:
        return False


def _execute_locked(notebook: Path, run_dir: Path, parameters: Mapping[str, Any], lock: PointLock, *,
                    timeout: float | None, cwd: Path | None, kernel_name: str, python: str | None,
                    extra_env: Mapping[str, str] | None, files_dir: Path | None = None) -> RunOutcome:
    """Run the worker with ``out_dir=run_dir``; the executed notebook, log and failure go to ``files_dir``
    (default ``run_dir``; the other tasks of a several-task cluster job use their own)."""
    files = files_dir or run_dir
    files.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "failure.json"):
        (files / stale).unlink(missing_ok=True)
    params = dict(parameters)
    params["out_dir"] = str(run_dir)
    if files == run_dir:
        atomic_write_json(run_dir / PARAMS_FILE, dict(parameters))
    output = files / notebook.name
    spec = {
        "notebook": str(notebook), "output": str(output), "parameters": params,
        "cwd": str(cwd or Path.cwd()), "kernel_name": kernel_name,
        "failure": str(files / "failure.json"), "parent_pid": os.getpid(),
    }
    spec_path = files / "worker.json"
    atomic_write_json(spec_path, spec)
    log = files / "log.txt"
    start = time.monotonic()
    env = dict(os.environ)
    env.update(extra_env or {})
    # busy-waiting OpenMP threads make small models crawl on a shared 2-core machine (see bnext.demo)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with open(log, "wb") as fh:
        # the worker inherits the locked file: the lock outlives this process while the worker runs
        proc = subprocess.Popen([python or sys.executable, "-m", "bnext.ablate.worker", str(spec_path)],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=str(cwd or Path.cwd()),
                                start_new_session=True, env=env, pass_fds=(lock.fd,))
        lock.record(proc.pid)
        _LIVE.add(proc)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            _LIVE.discard(proc)
    seconds = time.monotonic() - start
    run_id = run_dir.name
    if files != run_dir and rc == 0:
        return RunOutcome(run_id, dict(parameters), "ok", seconds)
    if rc is None:
        failure = {"status": "timeout", "message": f"the run exceeded the timeout of {timeout:g} s and was killed",
                   **_running_cell(output)}
    elif rc == 0 and is_complete(run_dir, parameters):
        return RunOutcome(run_id, dict(parameters), "ok", seconds)
    elif (files / "failure.json").is_file():
        try:
            failure = json.loads((files / "failure.json").read_text())
        except ValueError:
            failure = {"status": "error", "message": "unreadable failure.json"}
    elif rc == 0:
        failure = {"status": "error", "message": "the notebook finished but wrote no result.json with these "
                   "parameters to out_dir (does it call bnext.ablate.write_result?)"}
    else:
        failure = {"status": "error", "message": f"worker exited with status {rc}", **_running_cell(output)}
    failure.setdefault("log_tail", _tail(log))
    failure.update({"run_id": run_id, "parameters": dict(parameters), "seconds": round(seconds, 2)})
    atomic_write_json(files / "failure.json", failure)
    return RunOutcome(run_id, dict(parameters), failure.get("status", "failed"), seconds, failure)


def stored_difference(run_dir: Path, parameters: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (stored, requested)}`` where the point folder's ``params.json`` differs from ``parameters``
    (a name missing on one side shows as :data:`NOTEBOOK_DEFAULT`); empty for a new or matching folder."""
    try:
        stored = json.loads((Path(run_dir) / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    have, want = grids.normalized(stored), grids.normalized(dict(parameters))
    return {k: (have.get(k, NOTEBOOK_DEFAULT), want.get(k, NOTEBOOK_DEFAULT))
            for k in sorted(set(have) | set(want)) if have.get(k, NOTEBOOK_DEFAULT) != want.get(k, NOTEBOOK_DEFAULT)}


def check_overwrite(out: Path, points: list[tuple[str, dict]]) -> None:
    """Refuse (GridError naming every difference) when a point folder holds a run with other parameters."""
    lines = []
    for rid, point in points:
        for name, (old, new) in stored_difference(out / rid, point).items():
            lines.append(f"  {rid}: {name} was {old!r}, now {new!r}")
    if lines:
        shown = lines[:20] + ([f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else [])
        raise grids.GridError(f"{out} holds runs made with other parameters:\n" + "\n".join(shown)
                              + "\nRefusing to overwrite them: use another --out, or pass --overwrite to replace them.")


def prepare(notebook: str | os.PathLike[str], grid: Mapping[str, Any]) -> tuple[Path, list[tuple[str, dict]]]:
    """Validate the grid against the notebook (no kernel started) and list ``(run_id, point)`` pairs."""
    nb = Path(notebook).resolve()
    params = grids.notebook_parameters(nb)
    grids.validate_grid(grid, params, nb.name)
    names = grids.swept(grid)
    points = [(grids.run_id(p, names), p) for p in grids.expand(grid)]
    ids = [r for r, _ in points]
    if len(set(ids)) != len(ids):
        raise grids.GridError("two grid points map to the same run folder; give distinct values")
    return nb, points


def run_sweep(
    notebook: str | os.PathLike[str],
    grid: Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    jobs: int = 1,
    cwd: str | os.PathLike[str] | None = None,
    kernel_name: str = KERNEL_NAME,
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    summarize: bool = True,
) -> SweepReport:
    """Run ``notebook`` at every point of ``grid`` into ``out/<run-id>/`` and summarize the sweep.

    Points whose ``result.json`` matches are skipped (unless ``force``); a failing or timed-out run
    is recorded in its ``failure.json`` and the sweep goes on; a point still running in another
    process is left alone (status ``busy``). Folders holding other parameters are refused (GridError)
    unless ``overwrite``. Returns a :class:`SweepReport`.
    """
    from tqdm.auto import tqdm

    nb, points = prepare(notebook, grid)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out).resolve()
    if not overwrite:
        check_overwrite(out, points)
    out.mkdir(parents=True, exist_ok=True)
    report = SweepReport(nb, out)
    started = time.time()
    todo = []
    for rid, point in points:
        if not force and is_complete(out / rid, point):
            report.outcomes.append(RunOutcome(rid, point, "skipped"))
        else:
            todo.append((rid, point))
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"{nb.stem}", unit="run",
               disable=not progress)
    bar.set_postfix(failed=0, skipped=len(points) - len(todo))
    work_dir = Path(cwd).resolve() if cwd is not None else Path.cwd()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(execute_point, nb, out / rid, point, timeout=timeout, cwd=work_dir,
                               kernel_name=kernel_name, force=force, since=started): rid for rid, point in todo}
        for fut in as_completed(futures):
            outcome = fut.result()
            report.outcomes.append(outcome)
            if outcome.failure is not None:
                where = outcome.failure.get("cell_index")
                bar.write(f"run {outcome.run_id} {outcome.status}"
                          + (f" in cell {where}" if where is not None else "")
                          + f": {outcome.failure.get('error', '')} {outcome.failure.get('message', '')}".rstrip())
            bar.update(1)
            bar.set_postfix(failed=len(report.failed), skipped=report.count("skipped"))
    except BaseException:  # Ctrl-C: stop the running workers (and their kernels) rather than wait for them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(_LIVE):
            _kill_group(proc)
        raise
    pool.shutdown(wait=True)
    bar.close()
    order = {rid: i for i, (rid, _) in enumerate(points)}
    report.outcomes.sort(key=lambda o: order[o.run_id])
    if summarize:
        from .summary import write_summary

        report.summary = write_summary(out)
    return report
