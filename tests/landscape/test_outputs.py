"""One output rule for every command that writes about a checkpoint or model, and file modes that
follow the umask (colleagues on a shared cluster folder must be able to read the results)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from landscape.cli.outputs import run_folder


@pytest.mark.parametrize(("kw", "expected"), [
    ({"checkpoint": "runs/demo/bnext18/checkpoints/best.pt"}, "runs/demo/bnext18"),
    ({"checkpoint": "/data/exp/myrun/checkpoints/epoch_005.pt"}, "/data/exp/myrun"),
    ({"checkpoint": "downloads/BNext-T.pth.tar"}, "runs/BNext-T.pth"),
    ({"model": "bnext18"}, "runs/bnext18"),
    ({"model": "/abs/path/my_model.py:build"}, "runs/my_model_build"),
    ({"model": "pkg.models:make"}, "runs/models_make"),
    ({"model": "bnext18", "name": "a b:c"}, "runs/a_b_c"),
])
def test_run_folder_rule(kw, expected):
    assert run_folder(**kw) == Path(expected)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tiny_checkpoint(folder: Path) -> Path:
    import torch

    from bnext.models import create, save

    torch.manual_seed(0)
    return save(create("bnext18", num_classes=10, input_size=8, width=0.0625), folder / "checkpoints" / "best.pt")


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_compute_and_hessian_share_the_run_folder_and_files_follow_the_umask(in_tmp, umask, capsys):
    from bnext.ablate.results import atomic_write_json
    from bnext.packed import pack, save
    from landscape.__main__ import main

    old = os.umask(umask)
    try:
        ck = _tiny_checkpoint(in_tmp / "runs" / "demo" / "bnext18")
        common = ["--checkpoint", str(ck), "--no-progress", "--threads", "1"]
        assert main(["compute", *common, "--x", "-1:1:3", "--subset", "16", "--plot"]) == 0
        assert main(["hessian", *common, "--subset", "16", "--top-k", "1", "--max-iter", "4"]) == 0
        out = capsys.readouterr().out
        run = in_tmp / "runs" / "demo" / "bnext18"
        assert (run / "landscape_random_1d.h5").is_file() and (run / "hessian.json").is_file()
        assert "result written to " in out and str(Path('runs/demo/bnext18/hessian.json')) in out  # said at the end
        from bnext.models import load

        save(pack(load(ck)), run / "model.bnx")
        atomic_write_json(run / "result.json", {"ok": 1})
    finally:
        os.umask(old)
    modes = _modes(in_tmp / "runs")
    assert len(modes) >= 6, modes
    want = 0o666 & ~umask
    wrong = {k: oct(m) for k, m in modes.items() if m != want and not k.endswith(".lock")}
    assert not wrong, f"expected mode {oct(want)} under umask {oct(umask)}: {wrong}"
    assert json.loads((in_tmp / "runs/demo/bnext18/result.json").read_text()) == {"ok": 1}
