"""The papermill batch runner on a toy notebook: a 2x2 grid with one deliberately failing point."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nbformat
import pytest

from bnext.ablate import GridError, run_sweep
from bnext.ablate.__main__ import main as ablate_main
from bnext.ablate.grid import expand, notebook_parameters, parse_assignments, run_id, validate_grid
from bnext.ablate.summary import aggregate

TOY_PARAMETERS = """\
a = 1
b = "ok"
seed = 0
sleep = 0.0
out_dir = None
"""

TOY_BODY = [
    "import time\ntime.sleep(sleep)",
    "if a == 2 and b == 'fail':\n    raise RuntimeError('deliberate failure for the test')",
    "from bnext.ablate import write_result\n"
    "write_result(out_dir, notebook='toy', title='Toy table', parameters=dict(a=a, b=b, seed=seed, sleep=sleep),\n"
    "             rows=[{'a': a, 'b': b, 'score': 10.0 * a + seed}], index=['a', 'b'], columns=['score'])",
]


def write_toy(path: Path, parameters: str = TOY_PARAMETERS, body: list[str] = TOY_BODY) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(src) for src in body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    return write_toy(tmp_path / "toy.ipynb")


def test_grid_parsing_and_expansion():
    grid = parse_assignments(["a=[1,2]", "b=[ok,fail]", "seed=3", "rows=[[x,y]]"])
    assert grid == {"a": [1, 2], "b": ["ok", "fail"], "seed": 3, "rows": [["x", "y"]]}
    points = expand(grid)
    assert len(points) == 4 and points[0] == {"a": 1, "b": "ok", "seed": 3, "rows": ["x", "y"]}
    assert run_id(points[1], ["a", "b"]) == "a=1__b=fail"
    with pytest.raises(GridError, match="NAME=VALUE"):
        parse_assignments(["novalue"])


def test_values_are_yaml_without_base_60_numbers():
    grid = parse_assignments(["grid=-1:1:11", "lr=1e-3", "flag=true", "none=null", "grids=[-1:1:5,-2:2:9]"])
    assert grid == {"grid": "-1:1:11", "lr": 1e-3, "flag": True, "none": None, "grids": ["-1:1:5", "-2:2:9"]}


def test_parameters_papermill_cannot_parse_are_still_known(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('x = 1\noverrides = ["optim.lr=1e-3"]  # key=value strings\nout_dir = None')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "p.ipynb"))
    params = notebook_parameters(tmp_path / "p.ipynb")
    assert params["overrides"]["default"] == ["optim.lr=1e-3"] and params["x"]["type"] == "int"
    validate_grid({"overrides": [["train.epochs=2"]]}, params)


def test_validation_rejects_unknown_reserved_and_mistyped(toy: Path):
    params = notebook_parameters(toy)
    assert params["a"]["default"] == 1 and params["a"]["type"] == "int"
    with pytest.raises(GridError, match=r"unknown parameter\(s\) \['c'\]"):
        validate_grid({"c": [1]}, params)
    with pytest.raises(GridError, match="set by the runner"):
        validate_grid({"out_dir": "x"}, params)
    with pytest.raises(GridError, match="takes a int"):
        validate_grid({"a": ["one"]}, params)
    validate_grid({"a": [1, 2], "sleep": 1}, params)  # an int where a float is expected is fine


def test_unknown_parameter_rejected_before_anything_runs(toy: Path, tmp_path: Path, capsys):
    out = tmp_path / "sweep"
    with pytest.raises(GridError, match="unknown parameter"):
        run_sweep(toy, {"a": [1, 2], "typo": [0]}, out, progress=False)
    assert not out.exists()
    assert ablate_main([str(toy), "a=[1,2]", "typo=1", "--out", str(out), "--no-progress"]) == 2
    assert "unknown parameter" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_sweep_with_failing_point_then_rerun(toy: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    grid = {"a": [1, 2], "b": ["ok", "fail"]}
    report = run_sweep(toy, grid, out, jobs=2, timeout=120, cwd=tmp_path, progress=False)
    status = {o.run_id: o.status for o in report.outcomes}
    assert status == {"a=1__b=ok": "ok", "a=1__b=fail": "ok", "a=2__b=ok": "ok", "a=2__b=fail": "failed"}

    failure = json.loads((out / "a=2__b=fail" / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["error"] == "RuntimeError"
    assert "deliberate failure" in failure["message"] and "raise RuntimeError" in failure["cell_source"]
    assert isinstance(failure["cell_index"], int)
    assert failure["parameters"] == {"a": 2, "b": "fail"}
    assert (out / "a=2__b=fail" / "toy.ipynb").is_file()  # executed notebook kept for inspection
    for rid in ("a=1__b=ok", "a=1__b=fail", "a=2__b=ok"):
        result = json.loads((out / rid / "result.json").read_text())
        assert result["parameters"]["a"] == int(rid[2]) and result["rows"][0]["score"] == 10.0 * int(rid[2])
        assert (out / rid / "toy.ipynb").is_file()

    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3
    md = (out / "summary.md").read_text()
    assert "# Toy table" in md and "## Failed runs" in md and "a=2__b=fail" in md and "RuntimeError" in md
    assert "20.00 (n = 1)" in md and "± 0.00" not in md  # one run: no spread to show
    assert (out / "summary.png").stat().st_size > 1000

    stamps = {rid: (out / rid / "result.json").stat().st_mtime_ns for rid in status if status[rid] == "ok"}
    again = run_sweep(toy, grid, out, timeout=120, cwd=tmp_path, progress=False)
    assert {o.run_id: o.status for o in again.outcomes} == {**{r: "skipped" for r in stamps},
                                                             "a=2__b=fail": "failed"}
    assert stamps == {rid: (out / rid / "result.json").stat().st_mtime_ns for rid in stamps}

    # a changed fixed parameter: the folders hold other work, refused (naming the difference) ...
    seeded = {**grid, "seed": 1}
    with pytest.raises(GridError, match=r"(?s)a=1__b=ok: seed was '\(notebook default\)', now 1.*--overwrite"):
        run_sweep(toy, seeded, out, timeout=120, cwd=tmp_path, progress=False)
    assert stamps == {rid: (out / rid / "result.json").stat().st_mtime_ns for rid in stamps}
    # ... unless asked to overwrite them
    changed = run_sweep(toy, seeded, out, jobs=2, timeout=120, cwd=tmp_path, overwrite=True, progress=False)
    assert [o.status for o in changed.outcomes] == ["ok", "ok", "ok", "failed"]
    assert json.loads((out / "a=1__b=ok" / "params.json").read_text()) == {"a": 1, "b": "ok", "seed": 1}


@pytest.mark.slow
def test_timeout_kills_the_run_and_records_the_cell(toy: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    code = ablate_main([str(toy), "sleep=60", "--out", str(out), "--timeout", "8", "--no-progress",
                        "--cwd", str(tmp_path)])
    assert code == 1
    failure = json.loads((out / "default" / "failure.json").read_text())
    assert failure["status"] == "timeout"
    assert "time.sleep(sleep)" in failure.get("cell_source", "")


def test_aggregate_mean_std_over_seeds():
    rows = [{"run_id": f"s{s}", "v": "x", "top1": t} for s, t in enumerate([90.0, 92.0, 94.0])]
    rows.append({"run_id": "y", "v": "y", "top1": 50.0})
    table = aggregate(rows, ["v"], ["top1"])
    assert table[0]["top1_mean"] == pytest.approx(92.0) and table[0]["top1_std"] == pytest.approx(2.0)
    assert table[0]["n"] == 3 and table[1]["n"] == 1 and math.isnan(table[1]["top1_std"])


def test_worker_uses_this_interpreter():
    # papermill resolves kernel "python3" to the interpreter running it (jupyter_client replaces
    # argv[0] "python" by sys.executable): the runner starts workers with sys.executable.
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    assert argv[0] in ("python", "python3", sys.executable)
