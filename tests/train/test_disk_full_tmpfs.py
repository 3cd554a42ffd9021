"""Training, ``models import -o``, ``packed pack -o`` and ``bnext.quant``'s save on a real 200 KiB tmpfs
(issue 24): one line naming the file and the cause, exit 2, no temporary left (root only, as in CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bnext import models
from tests._tmpfs import small_tmpfs

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _one_line(proc: subprocess.CompletedProcess, path: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    # progress notes ("loading ...", "writing ... ...") may precede it; the error itself is one line
    errors = [line for line in proc.stderr.splitlines() if not line.endswith(" ...")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot write {path}" in proc.stderr and "no space left on device (errno 28)" in proc.stderr


@pytest.mark.slow
def test_training_and_model_writers_on_a_full_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        proc = _run("-m", "bnext.train", "--config", str(ROOT / "configs" / "digits_bnext18.yaml"),
                    *tiny_overrides(disk / "run"))
        _one_line(proc, str(disk / "run" / "checkpoints"))  # was torch's 33-line 'unexpected pos' traceback
        assert not [p for p in (disk / "run").rglob("*.tmp")]

        ckpt = tmp_path / "m.pt"
        models.save(models.create("xnornet18", num_classes=10, input_size=32, width=0.5), ckpt)
        assert ckpt.stat().st_size > 200 * 1024
        bnx = disk / "m.bnx"
        _one_line(_run("-m", "bnext.packed", "pack", str(ckpt), "-o", str(bnx), "--binarize"), str(bnx))
        assert not list(disk.glob(".m.bnx*"))
