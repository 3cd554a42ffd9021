"""``python -m landscape hessian`` (bnext glue) and the curvature modules' independence from bnext."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from landscape.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_curvature_modules_do_not_import_bnext():
    code = ("import sys, landscape.curvature.hessian, landscape.curvature.sharpness, landscape.curvature.eigmap; "
            "assert not [m for m in sys.modules if m.startswith('bnext')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.fixture
def checkpoint(tmp_path):
    models = pytest.importorskip("bnext.models")
    import torch

    torch.manual_seed(0)
    model = models.create("bnext18", num_classes=10, input_size=8, width=0.0625)
    return models.save(model, tmp_path / "run" / "checkpoints" / "best.pt")


@pytest.mark.slow
def test_hessian_cli_writes_json_density_and_eigenvalue_map_next_to_the_checkpoint(checkpoint, capsys):

    from bnext.models import load
    from bnext.nn import is_binary_weight
    from landscape.curvature.eigmap import read_eig_map

    common = ["hessian", "--checkpoint", str(checkpoint), "--subset", "16", "--no-progress", "--threads", "1"]
    argv = [*common, "--params", "real", "--top-k", "2", "--max-iter", "6", "--trace", "--probes", "3",
            "--density", "--density-iter", "5", "--sharpness", "--sharpness-steps", "2", "--directions", "2",
            "--x", "-1:1:2", "--y", "-0.5:0.5:3", "--eig-iter", "3", "--eig-tol", "1e-3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "top 2 eigenvalues" in text and "trace:" in text and "epsilon-sharpness" in text
    run = checkpoint.parent.parent
    res = json.loads((run / "hessian_real.json").read_text())
    model = load(checkpoint)
    real = sum(p.numel() for n, p in model.named_parameters() if not is_binary_weight(model, n))
    assert res["settings"]["parameters"] == real and res["settings"]["params"] == "real"
    assert "straight-through surrogate" in res["surrogate"]
    eig = res["top_eigenvalues"]
    assert len(eig["values"]) == 2 and eig["values"][0] >= eig["values"][1]
    # every start spends its Lanczos products plus one product per reported pair for its true residual
    assert eig["starts"] >= 2 and eig["hvps"] == eig["iterations"] + 2 * eig["starts"]
    assert len(eig["residuals"]) == 2 and eig["agreement"] >= 0 and "recurrence_residuals" in eig
    assert res["trace"]["probes"] == 3 and np.isfinite(res["trace"]["stderr"])
    assert Path(res["density"]["plot"]).is_file()
    assert res["random_sharpness"]["directions"] == 2 and res["epsilon_sharpness"]["increase"] >= 0
    m = read_eig_map(res["eigenvalue_map"]["surface"])
    assert m["done"].all() and m["max_eig"].shape == (2, 3) and (m["min_eig"] <= m["max_eig"]).all()
    assert Path(res["eigenvalue_map"]["plot"]).is_file()
    assert res["eigenvalue_map"]["unconverged_points"] == int((m["converged"] != 3).sum())

    assert main([*common, "--top-k", "1", "--max-iter", "4"]) == 0  # all parameters: hessian.json
    full = json.loads((run / "hessian.json").read_text())
    assert full["settings"]["parameters"] > real


def test_hessian_cli_errors(capsys):
    assert main(["hessian", "--model", "resnet18", "--y", "-1:1:3"]) == 2
    assert "--y needs --x" in capsys.readouterr().err
    assert main(["hessian", "--model", "resnet18", "--x", "1:0:3"]) == 2
    with pytest.raises(SystemExit):
        main(["hessian", "--model", "resnet18", "--params", "binary"])
