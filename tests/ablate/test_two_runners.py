"""Two real ``python -m bnext.ablate`` runners on one sweep folder share the work: no point runs twice and
no runner deletes a result the other wrote (issue 24: the point is claimed by lock, then re-checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnext.ablate.cluster import record_job
from bnext.ablate.runner import _completed_elsewhere

from .test_runner import write_toy

PARAMETERS = "a = 1\nsleep = 0.0\nout_dir = None\n"
BODY = [
    "import os, time\nfrom pathlib import Path\n"
    "with open(Path(out_dir).parent / 'runs.log', 'a') as fh:\n    fh.write(f'{a} {os.getppid()}\\n')\n"
    "time.sleep(sleep if a == 1 else 0.0)",
    "from bnext.ablate import write_result\n"
    "write_result(out_dir, notebook='count', parameters=dict(a=a, sleep=sleep), rows=[{'a': a, 'v': 1.0}],\n"
    "             index=['a'], columns=['v'])",
]


def _runner(nb: Path, out: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                                       os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "bnext.ablate", str(nb), "a=[1,2]", "sleep=8", "--out",
                             str(out), "--no-progress", "--cwd", str(cwd), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_runners_share_a_sweep_without_running_a_point_twice(tmp_path: Path):
    nb = write_toy(tmp_path / "count.ipynb", PARAMETERS, BODY)
    out = tmp_path / "sweep"
    extra = ()
    # the first runner plans both points and runs a=1 (slow); the second finds a=1 busy and completes
    # a=2 meanwhile; the first then reaches a=2, which it planned to run: it must see the new result
    procs = [_runner(nb, out, tmp_path, *extra)]
    time.sleep(1.0)
    procs.append(_runner(nb, out, tmp_path, *extra))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    runs = (out / "runs.log").read_text().split()
    points = sorted(runs[0::2])
    assert points == ["1", "2"], logs  # every point ran exactly once between the two runners
    for a in (1, 2):
        result = json.loads((out / f"a={a}" / "result.json").read_text())
        assert result["parameters"]["a"] == a
    assert all("Traceback" not in log for log in logs), logs


def test_job_record_with_a_damaged_history_is_rewritten(tmp_path: Path):
    class Job:
        job_id = "42"

        class paths:  # noqa: N801 - submitit's attribute names
            folder, stdout, stderr = tmp_path / "j", tmp_path / "j/o", tmp_path / "j/e"

    (tmp_path / "job.json").write_text(json.dumps({"job_id": "41", "history": "not a list"}))
    record_job(tmp_path, Job(), "slurm")
    rec = json.loads((tmp_path / "job.json").read_text())
    assert rec["job_id"] == "42" and rec["history"] == ["41"]


def test_forced_rerun_keeps_a_result_written_during_this_sweep(tmp_path: Path):
    point = {"a": 1}
    assert not _completed_elsewhere(tmp_path, point, force=False, since=None)  # no result yet: run it
    (tmp_path / "result.json").write_text(json.dumps({"parameters": {"a": 1}}))
    assert _completed_elsewhere(tmp_path, point, force=False, since=None)
    written = (tmp_path / "result.json").stat().st_mtime
    assert not _completed_elsewhere(tmp_path, point, force=True, since=written + 1.0)  # older result: rerun
    assert _completed_elsewhere(tmp_path, point, force=True, since=written - 1.0)  # another runner's, just now
    assert not _completed_elsewhere(tmp_path, {"a": 2}, force=False, since=None)  # other parameters
