"""Workers die with their runner (a real SIGKILL of ``python -m bnext.ablate``); a live point never starts twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnext.ablate import run_sweep
from bnext.ablate.guard import PointLock, descendants, lock_holder

from .test_runner import write_toy

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_killed_runner_takes_worker_and_kernel_along(tmp_path: Path, sig: int):
    toy = write_toy(tmp_path / "toy.ipynb")
    out = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runner = subprocess.Popen([sys.executable, "-m", "bnext.ablate", str(toy), "sleep=120", "--out", str(out),
                               "--no-progress", "--cwd", str(tmp_path)], env=env, cwd=str(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the runner takes the point's lock, then records its worker's PID in it
        worker = _wait_for(lambda: (lock_holder(out / "default") or runner.pid) != runner.pid
                           and lock_holder(out / "default"), 60, "the worker's PID in the point's lock")
        assert _alive(worker) and os.getppid() != worker
        # the kernel: a descendant of the worker running ipykernel, in a session of its own
        kernel = _wait_for(lambda: [p for p in descendants(worker) if b"ipykernel" in Path(f"/proc/{p}/cmdline")
                                    .read_bytes()], 60, "the notebook kernel")[0]
        assert os.getsid(kernel) != os.getsid(worker)
        _wait_for(lambda: b"sleep" in (out / "default" / "toy.ipynb").read_bytes()
                  if (out / "default" / "toy.ipynb").is_file() else False, 60, "the sleeping cell")
    except BaseException:
        runner.kill()
        raise
    runner.send_signal(sig)
    assert runner.wait(timeout=30) == (-9 if sig == signal.SIGKILL else 130)
    # the lock goes when the last thread of the worker has exited (a leader shows as a zombie a bit earlier)
    _wait_for(lambda: not _alive(worker) and not _alive(kernel) and lock_holder(out / "default") is None, 15,
              "worker and kernel to end and the point's lock to be released")
    assert not (out / "default" / "result.json").exists()


def test_a_point_whose_worker_lives_is_not_started_again(tmp_path: Path):
    toy = write_toy(tmp_path / "toy.ipynb")
    out = tmp_path / "sweep"
    (out / "default").mkdir(parents=True)
    with PointLock(out / "default"):  # stands for a worker left by an earlier runner
        assert lock_holder(out / "default") == os.getpid()
        report = run_sweep(toy, {"a": 1}, out, cwd=tmp_path, progress=False, summarize=False)
        assert [o.status for o in report.outcomes] == ["busy"]
        assert f"PID {os.getpid()}" in report.outcomes[0].failure["message"]
        assert not (out / "default" / "params.json").exists() and not (out / "default" / "log.txt").exists()
    assert lock_holder(out / "default") is None


def test_status_of_local_points(tmp_path: Path, capsys):
    from bnext.ablate.__main__ import main

    toy = write_toy(tmp_path / "toy.ipynb")
    out = tmp_path / "sweep"
    (out / "a=2").mkdir(parents=True)
    with PointLock(out / "a=2"):
        assert main([str(toy), "a=[1,2]", "--out", str(out), "--status"]) == 0
    text = capsys.readouterr().out
    assert "pending   a=1: not started" in text and f"running   a=2: PID {os.getpid()}" in text
    assert "1 pending, 1 running" in text
