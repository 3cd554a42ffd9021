"""``python -m landscape connect`` and ``flips`` on tiny digits checkpoints (the bnext glue, packed engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landscape.__main__ import main
from landscape.store import read_surface


def _checkpoint(path, seed):
    models = pytest.importorskip("bnext.models")
    import torch

    from bnext.nn import set_tau

    torch.manual_seed(seed)
    model = models.create("bnext18", num_classes=10, input_size=8, width=0.0625)
    set_tau(model, 0.0)  # fully binarized: the packed engine runs it
    return models.save(model, path)


@pytest.fixture
def two_checkpoints(tmp_path):
    return _checkpoint(tmp_path / "a" / "best.pt", 0), _checkpoint(tmp_path / "b" / "best.pt", 1)


@pytest.mark.slow
def test_connect_cli_writes_curve_line_packed_and_figure(two_checkpoints, tmp_path, capsys):
    a, b = two_checkpoints
    out = tmp_path / "conn"
    argv = ["connect", str(a), str(b), "--steps", "2", "--points", "3", "--subset", "16", "--bn-samples", "16",
            "--splits", "test",
            "--batch-size", "16", "--out", str(out), "--no-progress", "--format", "png", "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "latent" in text and "barrier" in text and "packed" in text
    curve, line = read_surface(out / "connect_bezier1_curve.h5"), read_surface(out / "connect_bezier1_line.h5")
    assert curve.complete and line.complete and curve.settings["latent_weights"] is True
    assert curve.settings["bn"] == "recalibrate" and curve.settings["fit"]["steps"] == 2
    packed = read_surface(out / "connect_bezier1_curve_packed.h5")
    assert packed.settings["evaluated_by"] == "packed"
    # the packed engine computes what the simulated binary network computes (README "Exactness")
    np.testing.assert_allclose(packed.values["test_loss"], curve.values["test_loss"], rtol=1e-4)
    assert (out / "connect_bezier1.png").stat().st_size > 10_000
    assert main(argv) == 0  # everything resumes: same files, nothing recomputed
    np.testing.assert_array_equal(read_surface(out / "connect_bezier1_curve.h5").values["test_loss"],
                                  curve.values["test_loss"])


@pytest.mark.slow
def test_flips_cli_summary_and_figure(two_checkpoints, tmp_path, capsys):
    a, _ = two_checkpoints
    out = tmp_path / "flips"
    assert main(["flips", str(a), "--scope", "network,all-layers", "--seeds", "0,1", "--fractions", "0,0.1,0.5,1",
                 "--subset", "16", "--out", str(out), "--no-progress", "--format", "png,pdf"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["network"]) == {"random", "magnitude"}
    assert summary["network"]["random"]["seeds"] == [0, 1] and len(summary) > 2  # network + every layer
    assert len(summary["network"]["random"]["curves"]["test_loss"]) == 2
    assert (out / "summary.csv").read_text().startswith("scope,order,metric,seeds,mean,std")
    assert (out / "flips.png").stat().st_size > 10_000 and (out / "flips.pdf").is_file()
    assert "half accuracy" in capsys.readouterr().out


def test_api_functions_take_the_flags_as_keywords(two_checkpoints, tmp_path):
    from landscape.cli.flips import flip_checkpoint

    a, _ = two_checkpoints
    res = flip_checkpoint(a, scope=["network"], orders=["magnitude"], fractions=[0.0, 1.0], subset=8,
                          out=str(tmp_path / "f"), no_progress=True, no_plot=True)
    assert [p.name for p in res["files"]] == ["flips_network_magnitude_s0.h5"] and res["figure"] is None
    with pytest.raises(ValueError, match="unknown option"):
        flip_checkpoint(a, sed=[1])


def test_cli_errors(two_checkpoints, tmp_path, capsys):
    a, _ = two_checkpoints
    assert main(["connect", str(a), str(tmp_path / "missing.pt"), "--no-progress"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["connect", str(a), str(a), "--bends", "0"])
    assert e.value.code == 2 and "expected an integer >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["flips", str(a), "--fractions", "0.2,0.1"])
    assert e.value.code == 2
    assert "--fractions must increase from 0 to 1" in capsys.readouterr().err
    assert main(["flips", str(a), "--scope", "nolayer", "--no-progress", "--no-plot", "--out",
                 str(tmp_path / "f")]) == 2
    assert "not a binary layer" in capsys.readouterr().err
