"""Training curves: every run draws curves.png/.pdf at the end; ``python -m bnext.train plot`` overlays runs."""

import json

import pytest

from bnext.train import load_config
from bnext.train.__main__ import main as train_main
from bnext.train.curves import read_metrics
from bnext.train.runner import run

from .conftest import tiny_overrides


def _fake_run(path, epochs, lr0):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as fh:
        for e in range(1, epochs + 1):
            row = {"epoch": e, "train_loss": 2.0 / e, "train_top1": 50 + 5 * e, "lr": lr0 / e, "tau": 1.0 / e}
            if e % 2 == 0:
                row.update(test_loss=2.2 / e, test_top1=45 + 5 * e)
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.mark.slow
def test_run_writes_curves(tmp_path):
    out = tmp_path / "run"
    run(load_config(None, tiny_overrides(out)))
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "curves.pdf").exists()


def test_plot_overlays_runs(tmp_path, capsys, monkeypatch):
    from landscape.figures import style

    a, b = _fake_run(tmp_path / "a", 6, 1e-3), _fake_run(tmp_path / "b", 4, 1e-1)
    figures = []
    real = style.save
    monkeypatch.setattr(style, "save", lambda fig, out, formats=None, dpi=200: (figures.append(fig),
                                                                                real(fig, out, formats, dpi))[1])
    out = tmp_path / "both.png"
    assert train_main(["plot", str(a), str(b), "--out", str(out), "--format", "png,svg", "--dpi", "80"]) == 0
    assert out.exists() and out.with_suffix(".svg").exists() and "wrote" in capsys.readouterr().out
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes[:4]] == ["loss", "top-1 accuracy", "learning rate",
                                                   "binarization temperature"]
    loss_lines = axes[0].get_lines()
    assert len(loss_lines) == 4  # train and test of each run
    test_a = [ln for ln in loss_lines if ln.get_linestyle() == "--"][0]
    assert list(test_a.get_xdata()) == [2.0, 4.0, 6.0]  # test points only where evaluated
    assert axes[2].get_yscale() == "log"  # learning rates spanning 1e-1..1.7e-4
    assert axes[3].get_xlabel() == "epoch"
    assert len(read_metrics(a)) == 6
    assert train_main(["plot", str(tmp_path / "missing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_a_real_valued_run_draws_no_empty_tau_panel(tmp_path, monkeypatch):
    from bnext.train.curves import plot_curves
    from landscape.figures import style

    run_dir = tmp_path / "resnet"
    run_dir.mkdir()
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_top1": 60 + e, "lr": 0.1 / e, "tau": None} for e in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = []
    real = style.save
    monkeypatch.setattr(style, "save", lambda fig, out, formats=None, dpi=200: (figures.append(fig),
                                                                                real(fig, out, formats, dpi))[1])
    plot_curves([run_dir], tmp_path / "c.png", formats=["png"])
    titles = [ax.get_title() for ax in figures[0].axes if ax.get_visible()]
    assert titles == ["loss", "top-1 accuracy", "learning rate"]
    assert all(ax.get_lines() for ax in figures[0].axes)
