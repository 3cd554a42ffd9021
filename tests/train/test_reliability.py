"""Faults through ``python -m bnext.train``: one line and exit 2 (never a traceback), one writer per run
folder, previous files kept on a failed write, stale temporaries removed."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bnext.io
from bnext.train.__main__ import main

from .conftest import tiny_overrides

ROOT = Path(__file__).parents[2]


def _cli(capsys, out, *extra, **overrides):
    rc = main(["--config", str(ROOT / "configs" / "digits_bnext18.yaml"), *tiny_overrides(out, **overrides), *extra])
    err = capsys.readouterr().err
    return rc, err


def _one_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 1-epoch run (its last.pt is reused by the checkpoint cases)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["--config", str(ROOT / "configs" / "digits_bnext18.yaml"),
                 *tiny_overrides(out, **{"train.epochs": 1})]) == 0
    return out


def test_zero_byte_and_truncated_last_pt_under_resume(tmp_path, capsys, trained):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(b"")
    rc, err = _cli(capsys, out, "--resume")
    assert rc == 2 and "last.pt is not a readable workbench checkpoint" in _one_line(err)
    last.write_bytes((trained / "checkpoints" / "last.pt").read_bytes()[:3000])
    rc, err = _cli(capsys, out, "--resume")
    assert rc == 2 and "last.pt is not a readable workbench checkpoint" in _one_line(err)


def test_resume_from_a_checkpoint_of_other_options(tmp_path, capsys, trained):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes((trained / "checkpoints" / "last.pt").read_bytes())
    rc, err = _cli(capsys, out, "--resume", **{"train.epochs": 1, "model.width": 0.25})
    line = _one_line(err)
    assert rc == 2 and "cannot resume from" in line and "last.pt" in line


def test_unreadable_or_mismatched_init_checkpoint(tmp_path, capsys, trained):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    rc, err = _cli(capsys, tmp_path / "a", f"init_checkpoint={empty}")
    assert rc == 2 and "empty.pt is not a readable workbench checkpoint" in _one_line(err)
    rc, err = _cli(capsys, tmp_path / "b", f"init_checkpoint={tmp_path / 'missing.pt'}")
    assert rc == 2 and "missing.pt does not exist" in _one_line(err)
    rc, err = _cli(capsys, tmp_path / "c", f"init_checkpoint={trained / 'checkpoints' / 'last.pt'}",
                   **{"model.width": 0.25})
    assert rc == 2 and "does not fit bnext18" in _one_line(err)


def test_missing_cifar_root_is_one_line(tmp_path, capsys):
    rc, err = _cli(capsys, tmp_path / "run", **{"data.name": "cifar10", "data.input_size": 32})
    line = _one_line(err)
    assert rc == 2 and "cifar10: no root folder given (set data.root)" in line


@pytest.mark.parametrize("override,expected", [
    ({"train.epochs": 0}, "'train.epochs' must be >= 1"),
    ({"quant.spec": "8/8-4/8-4/8-8/8", "quant.finetune_epochs": 0}, "'quant.finetune_epochs' must be >= 1"),
])
def test_runs_of_zero_epochs_are_refused(tmp_path, capsys, override, expected):
    rc, err = _cli(capsys, tmp_path / "run", **override)
    assert rc == 2 and expected in _one_line(err)
    assert not (tmp_path / "run").exists()


def test_disk_full_names_the_file_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch, trained):
    out = tmp_path / "run"
    assert _cli(capsys, out, **{"train.epochs": 2, "train.stop_after": 1})[0] == 0
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bnext.io.os, "fsync", full)
    rc, err = _cli(capsys, out, "--resume", **{"train.epochs": 2})
    line = _one_line(err)
    assert rc == 2 and ".pt: no space left on device" in line and "previous file" in line
    assert line.startswith(f"error: cannot write {out / 'checkpoints'}/")
    assert last.read_bytes() == before  # the epoch-1 checkpoint survives
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]


def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permissions: refuse writes under the folder as a read-only mount would
        real_open = os.open

        def read_only(path, flags, *a, **k):
            if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(bnext.io.os, "open", read_only)
    try:
        rc, err = _cli(capsys, out / "run")
    finally:
        out.chmod(0o755)
    line = _one_line(err)
    assert rc == 2 and f"cannot write {out / 'run'}" in line
    assert "read-only file system" in line or "permission denied" in line


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, capsys):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = [ckpts / f".last.pt.{dead_pid}.k2j4x9.tmp", out / f".result.json.{dead_pid}.tmp"]
    alive = ckpts / f".best.pt.{os.getppid()}.abc.tmp"  # a live PID: kept
    for p in (*stale, alive):
        p.write_bytes(b"half a file")
    rc, err = _cli(capsys, out, **{"train.epochs": 1})
    assert rc == 0
    assert not any(p.exists() for p in stale) and alive.exists()
    assert f"removed {stale[0]}" in err
    assert not (out / ".lock").exists()  # released and removed at the end


@pytest.mark.slow
def test_second_training_in_the_same_folder_stops_at_once(tmp_path):
    out = tmp_path / "run"
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "bnext.train", "--config", str(base)]
    first = subprocess.Popen([*cmd, *tiny_overrides(out, **{"train.epochs": 200})], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / ".lock").exists() and time.time() < deadline:  # taken before the data load
            time.sleep(0.05)
        assert (out / ".lock").exists()
        t0 = time.time()
        second = subprocess.run([*cmd, *tiny_overrides(out, **{"train.epochs": 200})], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by another process (PID {first.pid} on" in second.stderr
        assert time.time() - t0 < 60  # it did not train
        assert first.poll() is None  # and the first one runs on
    finally:
        first.kill()
        first.wait()
