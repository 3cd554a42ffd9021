"""Subprocess tests: SIGKILL mid-grid then resume; two gloo ranks equal one process."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from landscape.store import VALUE_NAMES, read_surface

SCRIPT = Path(__file__).with_name("_compute_script.py")
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return env


def _run(out, delay=0.0, **env):
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(delay)],
        env=_env(**env),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _kill_after(out, points, delay):
    """Start the script and SIGKILL it once it has started ``points`` grid points."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), str(delay)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("point")
        if seen >= points:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    return proc.returncode


def _assert_same(a, b):
    sa, sb = read_surface(a), read_surface(b)
    assert sa.complete and sb.complete
    for name in VALUE_NAMES:
        np.testing.assert_array_equal(sa.values[name], sb.values[name])
    np.testing.assert_array_equal(sa.xcoordinates, sb.xcoordinates)
    np.testing.assert_array_equal(sa.ycoordinates, sb.ycoordinates)
    assert sa.settings == {**sb.settings, "checkpoint_path": sa.settings.get("checkpoint_path")}


@pytest.mark.slow
def test_sigkill_mid_grid_then_resume_equals_uninterrupted(tmp_path):
    reference = tmp_path / "reference.h5"
    _run(reference)
    out = tmp_path / "killed.h5"
    assert _kill_after(out, 9, delay=0.05) == -signal.SIGKILL
    partial = read_surface(out)  # readable after the kill, with the finished points flagged
    assert 0 < partial.done.sum() < partial.done.size
    done_values = partial.values["train_loss"][partial.done]
    assert np.isfinite(done_values).all()
    assert _kill_after(out, 5, delay=0.02) == -signal.SIGKILL  # a second kill while resuming
    done_before = int(read_surface(out).done.sum())
    assert done_before > partial.done.sum()
    result = _run(out)
    assert result.stdout.count("point") == 30 - done_before  # only the missing points are evaluated
    _assert_same(out, reference)


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process(tmp_path):
    single = tmp_path / "single.h5"
    _run(single)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist.h5"
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
            ),
        )
        for r in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    # each rank evaluated about half of the 30 points
    counts = [o[0].count("point") for o in outputs]
    assert counts == [15, 15]
    _assert_same(out, single)
