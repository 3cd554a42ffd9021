"""Sweeps through submitit (its LocalExecutor: the job objects Slurm would run), status, resubmission, sbatch text."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import nbformat
import pytest

from bnext.ablate import slurm
from bnext.ablate.__main__ import main as ablate_main
from bnext.ablate.cluster import PointJob, point_state, read_job
from bnext.ablate.guard import lock_holder

ROOT = Path(__file__).resolve().parents[2]

PARAMETERS = "a = 1\nsleep = 0.0\nout_dir = None\n"
BODY = [
    "import os, time\ntime.sleep(sleep)",
    "if os.environ.get('TOY_FAIL') == str(a):\n    raise RuntimeError(f'deliberate failure of a={a}')",
    "from bnext.ablate import write_result\n"
    "write_result(out_dir, notebook='toy', parameters=dict(a=a, sleep=sleep), rows=[{'a': a, 'score': 10.0 * a}],\n"
    "             index=['a'], columns=['score'], rank=os.environ.get('RANK'))",
]


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(PARAMETERS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(src) for src in BODY]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "toy.ipynb"))
    # submitit's local jobs start `python -m submitit.core._submit`: they must import this checkout
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return tmp_path / "toy.ipynb"


def _sweep(toy: Path, out: Path, *extra: str) -> int:
    return ablate_main([str(toy), "a=[1,2]", "--out", str(out), "--cwd", str(toy.parent), "--executor", "slurm",
                        "--submitit-cluster", "local", "--slurm-time", "5", *extra])


@pytest.mark.slow
def test_two_point_sweep_then_a_failed_point_resubmitted(toy: Path, tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    monkeypatch.setenv("TOY_FAIL", "2")  # the jobs inherit it: point a=2 fails
    assert _sweep(toy, out, "--wait") == 1
    first = {rid: read_job(out / rid)["job_id"] for rid in ("a=1", "a=2")}
    assert first["a=1"] != first["a=2"]
    assert json.loads((out / "a=1" / "result.json").read_text())["rows"] == [{"a": 1, "score": 10.0}]
    assert not (out / "a=2" / "result.json").exists()
    err = capsys.readouterr().err  # --wait talks: what was submitted, then a bar over the jobs
    assert "submitted 2 job(s) to local" in err and "waiting for them" in err
    assert re.search(r"jobs finished: 100%\|[^|]*\| 2/2", err), err

    assert ablate_main([str(toy), "a=[1,2]", "--out", str(out), "--status"]) == 0
    status = capsys.readouterr().out
    assert f"done      a=1 [job {first['a=1']}]" in status
    assert f"failed    a=2 [job {first['a=2']}]: failed RuntimeError deliberate failure of a=2" in status
    assert "| " in status and "1 done, 1 failed" in status

    monkeypatch.delenv("TOY_FAIL")  # the rerun skips a=1 and resubmits a=2, which now succeeds
    stamp = (out / "a=1" / "result.json").stat().st_mtime_ns
    assert _sweep(toy, out, "--wait") == 0
    assert "1 ran, 1 already complete, 0 failed" in capsys.readouterr().out
    assert (out / "a=1" / "result.json").stat().st_mtime_ns == stamp
    record = read_job(out / "a=2")
    assert record["job_id"] != first["a=2"] and record["history"] == [first["a=2"]]
    assert point_state(out / "a=2", {"a": 2}).state == "done"
    assert "score" in (out / "summary.csv").read_text()


@pytest.mark.slow
def test_a_preempted_job_requeues_itself_and_finishes(toy: Path, tmp_path: Path, capsys):
    out = tmp_path / "sweep"
    code = ablate_main([str(toy), "sleep=[6]", "--out", str(out), "--cwd", str(tmp_path), "--executor", "slurm",
                        "--submitit-cluster", "local"])
    assert code == 0 and "1 submitted" in capsys.readouterr().out
    run_dir = out / "default"
    deadline = time.monotonic() + 90
    def worker_pid() -> int:
        """The point's worker once it holds the lock (before that, the job process itself holds it)."""
        pid = lock_holder(run_dir) or 0
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes() if pid > 0 else b""
        except OSError:
            return 0
        return pid if b"bnext.ablate.worker" in cmd else 0

    while not worker_pid() or point_state(run_dir, {"sleep": 6}).state != "running":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)
    worker = worker_pid()
    task = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the job's task process
    os.kill(task, signal.SIGUSR2)  # what Slurm sends before preempting (--signal=USR2@90)
    deadline = time.monotonic() + 120
    while point_state(run_dir, {"sleep": 6}).state != "done":
        assert time.monotonic() < deadline, "the preempted job was not requeued and finished"
        time.sleep(0.2)
    logs = Path(read_job(run_dir)["folder"])
    text = "".join(p.read_text(errors="replace") for p in logs.glob("*_log.*"))
    assert "Requeued job" in text and "Calling checkpoint method" in text
    assert text.count("Starting with JobEnvironment") == 2  # the point ran again in the requeued job


def test_point_job_checkpoint_resubmits_the_same_point(tmp_path: Path):
    job = PointJob("nb.ipynb", str(tmp_path / "p"), {"a": 1}, timeout=5.0, cwd=str(tmp_path))
    delayed = job.checkpoint()
    again = delayed.function
    assert isinstance(again, PointJob) and again is not job
    assert (again.notebook, again.run_dir, again.parameters, again.timeout) == ("nb.ipynb", str(tmp_path / "p"),
                                                                                 {"a": 1}, 5.0)


def test_sbatch_script_from_grid_block_and_options(tmp_path: Path):
    block = {"partition": "gpu", "gpus_per_node": 4, "nodes": 2, "time": "12:00:00", "mem": "64G",
             "array_parallelism": 8, "account": "bnn"}
    args = argparse.Namespace(slurm_partition="long", slurm_time=None, slurm_gpus_per_node=None,
                                    slurm_nodes=None, slurm_mem=None, slurm_array_parallelism=None)
    conf = slurm.settings(block, args)
    text = slurm.sbatch_script(conf, tmp_path / "%j", name="ablate-module_ablation", array=12)
    lines = set(text.splitlines())
    for flag in ("--partition=long", "--gpus-per-node=4", "--nodes=2", "--ntasks-per-node=4", "--time=720",
                 "--mem=64GB", "--array=0-11%8", "--account=bnn", "--job-name=ablate-module_ablation",
                 "--signal=USR2@90"):
        assert f"#SBATCH {flag}" in lines, flag
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
    assert slurm.parse_time("1-02:03:00") == 24 * 60 + 2 * 60 + 3 and slurm.parse_time(90) == 90
    with pytest.raises(slurm.SlurmSettingsError, match="slurm time 'soon'"):
        slurm.executor_parameters({"time": "soon"}, name="x")
    with pytest.raises(slurm.SlurmSettingsError, match="unknown slurm setting"):
        slurm.executor_parameters({"partitoin": "gpu"}, name="x")


def test_bad_slurm_settings_and_missing_slurm_exit_2(toy: Path, tmp_path: Path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("a: [1, 2]\nslurm:\n  mem: lots\n")
    out = tmp_path / "sweep"
    assert ablate_main([str(toy), "--grid", str(grid), "--out", str(out), "--executor", "slurm"]) == 2
    assert "slurm mem 'lots'" in capsys.readouterr().err
    grid.write_text("a: [1, 2]\nslurm:\n  partition: gpu\n")
    if shutil.which("srun") is None:
        assert ablate_main([str(toy), "--grid", str(grid), "--out", str(out), "--executor", "slurm"]) == 2
        assert "no Slurm here" in capsys.readouterr().err


def _join_and_reduce() -> dict:
    """In a job task: the trainer's set-up (bnext.train.distributed.setup) and metric reduction."""
    from bnext.train.distributed import all_reduce_metrics, cleanup, setup

    ctx = setup("cpu")
    try:
        metrics = all_reduce_metrics({"count": 1 + ctx.rank, "loss": float(ctx.rank), "top1": 50.0}, ctx)
    finally:
        cleanup(ctx)
    return {"rank": ctx.rank, "world": ctx.world_size, "local": ctx.local_rank, "loss": metrics["loss"],
            "count": metrics["count"], "master": os.environ["MASTER_ADDR"], "port": os.environ["MASTER_PORT"]}


@pytest.mark.slow
def test_a_two_task_job_is_one_process_group(tmp_path: Path, monkeypatch):
    """submitit's JobEnvironment -> RANK/WORLD_SIZE/...: the two tasks of one job join one gloo group."""
    import submitit

    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    ex = submitit.LocalExecutor(tmp_path / "jobs")
    ex.update_parameters(tasks_per_node=2, timeout_min=5)
    results = ex.submit(_join_and_reduce).results()
    assert [(r["rank"], r["world"], r["local"]) for r in results] == [(0, 2, 0), (1, 2, 1)]
    # weighted by count: (1 * 0.0 + 2 * 1.0) / 3 on both ranks
    assert all(r["count"] == 3 and r["loss"] == pytest.approx(2 / 3) for r in results)
    assert results[0]["master"] == results[1]["master"] and results[0]["port"] == results[1]["port"]


def test_other_tasks_of_a_job_write_no_result(tmp_path: Path, monkeypatch):
    from bnext.ablate import write_result

    monkeypatch.setenv("RANK", "1")
    write_result(tmp_path, notebook="toy", parameters={}, rows=[{"a": 1}], index=["a"], columns=[])
    assert not (tmp_path / "result.json").exists()
    monkeypatch.setenv("RANK", "0")
    write_result(tmp_path, notebook="toy", parameters={}, rows=[{"a": 1}], index=["a"], columns=[])
    assert (tmp_path / "result.json").is_file()


def test_shipped_table4_sweep_is_valid_for_the_notebook(tmp_path: Path):
    from bnext.ablate.grid import load_grid_file
    from bnext.ablate.runner import prepare

    grid = load_grid_file(ROOT / "configs/sweeps/table4_cifar10.yaml")
    block = grid.pop("slurm")
    grid["data_root"] = "/data/cifar10"
    _, points = prepare(ROOT / "notebooks/module_ablation.ipynb", grid)
    assert len(points) == 12 and points[0][0] == "info_rcp=true__elm_attention=true__seed=0"
    text = slurm.sbatch_script(slurm.settings(block), tmp_path / "%j", name="ablate-module_ablation", array=12)
    assert "#SBATCH --time=1440" in text and "#SBATCH --gpus-per-node=1" in text and "#SBATCH --array=0-11%12" in text
