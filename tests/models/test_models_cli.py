"""``python -m bnext.models``: help without torch, ``list``, bad input exits 2."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_help_does_not_import_torch():
    probe = _run("-c", "import sys, bnext.models.__main__; print('torch' in sys.modules)")
    assert probe.stdout.strip() == "False", probe.stderr
    out = _run("-m", "bnext.models", "--help")
    assert out.returncode == 0 and "{import,list}" in out.stdout


def test_list_and_bad_input(tmp_path):
    from bnext.models.__main__ import main

    assert main(["list"]) == 0
    assert main(["import", str(tmp_path / "absent.pth.tar")]) == 2
