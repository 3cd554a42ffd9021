"""Table 2 "†" size/QOPs/OPs with the op counter, and the Table 7 accuracy table/CLI."""

from __future__ import annotations

import pytest
import torch

from bnext import models
from bnext.quant import DAGGER_SPECS, PAPER_SPEC, TABLE7_SPECS, dagger_row, format_dagger, format_table7, table7
from bnext.quant.__main__ import main

from .conftest import small


def _check(row: dict, tol: float = 0.03) -> None:
    assert abs(row["size_err"]) < tol, row
    assert abs(row["qops_err"]) < tol, row
    assert abs(row["ops_err"]) < tol, row


def test_dagger_bnext_t_within_3_percent():
    row = dagger_row("bnext_t")
    assert row["spec"] == PAPER_SPEC
    _check(row)
    assert row["size_mib"] == pytest.approx(5.41, abs=0.01) and row["qops"] == 13_344_512


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bnext18", "bnext_s", "bnext_m", "bnext_l"])
def test_dagger_rows_within_3_percent(name):
    row = dagger_row(name)
    _check(row)
    assert "|" in format_dagger([row])


@pytest.mark.slow
def test_bnext18_dagger_needs_the_downsample_group():
    assert DAGGER_SPECS["bnext18"] == PAPER_SPEC + "-4/8"
    without = dagger_row("bnext18", PAPER_SPEC)
    assert without["size_err"] > 0.2 and without["qops_err"] < -0.1  # 2.77 MiB, 118.9e6 QOPs
    at8 = dagger_row("bnext18", PAPER_SPEC + "-8/8")
    assert 0.03 < at8["size_err"] < 0.04 and at8["qops"] == dagger_row("bnext18")["qops"]


def _digits_batches(size: int = 16):
    from bnext.data import load_tensors

    x, y = load_tensors("digits", "train", input_size=size)
    xt, yt = load_tensors("digits", "test", input_size=size)
    return [(x[:64], y[:64])], [(xt[:96], yt[:96])]


def test_table7_runs_and_formats():
    train, test = _digits_batches()
    model = small("bnext18").eval()
    rows = table7(model, train, test, specs=TABLE7_SPECS[:3], calib_batches=1)
    assert [r["spec"] for r in rows] == list(TABLE7_SPECS[:3])
    assert rows[0]["delta_top1"] == 0.0
    text = format_table7(rows, "bnext18")
    assert "8/8-4/8-4/8-8/8" in text and "68.37" in text  # the paper's BNext-18 column


def test_cli_quantize_and_table(tmp_path, capsys, monkeypatch):
    import bnext.data

    real = bnext.data.load_tensors

    def few(name, split, **kw):  # 96 images per split keep the CLI test fast
        x, y = real(name, split, **kw)
        return x[:96], y[:96]

    monkeypatch.setattr(bnext.data, "load_tensors", few)
    torch.manual_seed(0)
    model = models.create("bnext18", num_classes=10, input_size=16, width=0.125)
    ckpt = models.save(model, tmp_path / "f.pt")
    out = tmp_path / "q.pt"
    assert main(["--checkpoint", str(ckpt), "--spec", "8/8-4/8-4/8-8/8", "--calib-batches", "1",
                 "-o", str(out)]) == 0
    assert "8/8-4/8-4/8-8/8: top-1" in capsys.readouterr().out
    from bnext.quant import load

    assert load(out).quant_spec == "8/8-4/8-4/8-8/8"
    assert main(["table", "--checkpoint", str(ckpt), "--calib-batches", "1"]) == 0
    text = capsys.readouterr().out
    assert all(f"| {s} |" in text for s in TABLE7_SPECS)
    assert main(["--checkpoint", str(ckpt), "--spec", "8/8-4/8"]) == 2
    assert "expected I-S-E-O like 8/8-4/8-4/8-8/8" in capsys.readouterr().err
    assert main(["table", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
