"""Every notebook runs under papermill (kernel ``python3`` = this interpreter) with tiny parameters,
in its own process with its own working directory, and writes a ``result.json`` with real content."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bnext.ablate.grid import notebook_parameters
from bnext.ablate.runner import execute_point

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["module_ablation", "augmentation_ablation", "quantization_ablation", "distillation_ablation",
         "landscape_figures", "explore"]
TINY = {"width": 0.0625, "input_size": 8, "epochs": 1, "batch_size": 64, "steps_per_epoch": 2, "threads": 1,
        "device": "cpu"}
TIMEOUT = 300


def run_notebook(name: str, tmp_path: Path, **params) -> dict:
    run_dir = tmp_path / "runs" / name
    outcome = execute_point(NOTEBOOKS / f"{name}.ipynb", run_dir, params, timeout=TIMEOUT, cwd=tmp_path)
    if outcome.status != "ok":
        failure = outcome.failure or {}
        pytest.fail(f"{name} {outcome.status}: cell {failure.get('cell_index')} {failure.get('error')}: "
                    f"{failure.get('message')}\n{failure.get('traceback', '')[-3000:]}\n{failure.get('log_tail', '')}")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["format"] == "bnext-ablation-result" and result["notebook"] == name
    for key, value in params.items():
        assert result["parameters"][key] == value
    for rel in result["figures"].values():
        assert (run_dir / rel).stat().st_size > 1000, rel
    assert (run_dir / f"{name}.ipynb").is_file()  # the executed copy
    return result


def top1_ok(value) -> bool:
    return isinstance(value, int | float) and 0.0 <= value <= 100.0


def test_notebooks_exist_with_parameters_cell_and_no_outputs():
    import ast

    import nbformat
    import papermill

    for name in NAMES:
        path = NOTEBOOKS / f"{name}.ipynb"
        params = notebook_parameters(path)
        # papermill's own parser (JupyterLab/papermill users) sees every assignment of the cell
        cell = next(c for c in nbformat.read(str(path), as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        names = {t.id for n in ast.parse(cell.source).body for t in n.targets}
        assert names == set(papermill.inspect_notebook(str(path))) == set(params), name
        assert "out_dir" in params, name
        assert '"output_type"' not in path.read_text(), f"{name} is committed with outputs"
        if name != "explore":
            assert params["data"]["default"] == "digits" and "data_root" in params and "width" in params
            assert "epochs" in params and "device" in params


@pytest.mark.slow
def test_module_ablation(tmp_path):
    result = run_notebook("module_ablation", tmp_path, info_rcp=[True, False], elm_attention=True,
                          grid="-1:1:3", samples=32, **TINY)
    rows = result["rows"]
    assert [(r["info_rcp"], r["elm_attention"]) for r in rows] == [(True, True), (False, True)]
    assert all(top1_ok(r["top1"]) and math.isfinite(r["roughness"]) for r in rows)
    assert result["table"]["index"] == ["info_rcp", "elm_attention"]


@pytest.mark.slow
def test_augmentation_ablation(tmp_path):
    augs = ["standard", "mixup", "cutmix", "repeated", "randaugment", "randaugment+mixup"]
    result = run_notebook("augmentation_ablation", tmp_path, augmentations=augs, **{**TINY, "steps_per_epoch": 1})
    rows = result["rows"]
    assert [r["augmentation"] for r in rows] == augs
    assert all(top1_ok(r["top1"]) for r in rows) and rows[0]["delta_top1"] == 0.0


@pytest.mark.slow
def test_quantization_ablation(tmp_path):
    from bnext.quant import TABLE7_SPECS

    result = run_notebook("quantization_ablation", tmp_path, calib_batches=2, **TINY)
    rows = result["rows"]
    assert [r["spec"] for r in rows] == list(TABLE7_SPECS)
    assert all(top1_ok(r["top1"]) for r in rows)
    assert rows[0]["delta_top1"] == pytest.approx(0.0)  # 32/32 is the float model


@pytest.mark.slow
def test_distillation_ablation(tmp_path):
    result = run_notebook("distillation_ablation", tmp_path, teachers=["resnet18@0.0625", "bireal18@0.0625"],
                          **TINY)
    rows = result["rows"]
    assert [r["setting"] for r in rows] == ["none", "single_low_kc", "single_high_kc", "ensemble_mean",
                                            "ensemble_gap"]
    assert all(top1_ok(r["top1"]) for r in rows)
    assert rows[0]["teachers"] == "-" and " + " in rows[-1]["teachers"]
    teachers = result["teachers"]
    assert len(teachers) == 2 and teachers[0]["kc"] <= teachers[1]["kc"]
    table8 = result["table8"]
    assert len(table8) == 10
    assert all(abs(r["kc"] - r["paper_kc"]) <= 1.5e-3 for r in table8)


@pytest.mark.slow
def test_landscape_figures(tmp_path):
    result = run_notebook("landscape_figures", tmp_path, models=["resnet18", "bnext18"], grid="-1:1:3", samples=32,
                          **TINY)
    rows = result["rows"]
    assert [r["key"] for r in rows] == ["resnet18", "bnext18"]
    assert all(top1_ok(r["top1"]) and r["roughness"] is not None for r in rows)
    assert set(result["figures"]) == {"fig2", "fig6"}
    run_dir = tmp_path / "runs" / "landscape_figures"
    assert (run_dir / "bnext18" / "landscape_3d.html").stat().st_size > 100_000  # plotly.js inlined


@pytest.fixture()
def two_surfaces(tmp_path):
    import torch

    from bnext.ablate import tasks
    from bnext.models import create, save

    paths = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest (and immune to busy-waiting on a loaded machine)
    try:
        for i, name in enumerate(["resnet18", "bireal18"]):
            torch.manual_seed(i)
            ckpt = save(create(name, num_classes=10, input_size=8, width=0.0625), tmp_path / "ck" / f"{name}.pt")
            paths.append(tasks.compute_landscape(ckpt, tmp_path / "surfaces" / f"{name}.h5", x="-1:1:3",
                                                 y="-1:1:4", samples=16))
    finally:
        torch.set_num_threads(threads)
    return paths


@pytest.mark.slow
def test_explore(tmp_path, two_surfaces):
    a, b = two_surfaces
    result = run_notebook("explore", tmp_path, path=str(a), other=str(b), root=str(a.parent), axis="y", at=0.5)
    rows = result["rows"]
    assert [Path(r["surface"]).name for r in rows] == ["resnet18.h5", "bireal18.h5"]
    assert all(math.isfinite(r["loss_centre"]) for r in rows)
    assert (tmp_path / "runs" / "explore" / "surface_3d.html").is_file()
