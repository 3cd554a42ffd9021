"""The CLI of the anchors' features: --loss/--metric (compute, hessian, plot --key), --directions plane,
hessian --per-block; on your own tiny model and data (no zoo checkpoint needed)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.__main__ import main
from landscape.store import read_surface

MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=6):
        super().__init__()
        self.stem = nn.Linear(3, hidden)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) for _ in range(2)])
        self.bn = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, 4)

    def forward(self, x):
        return self.head(self.bn(self.blocks(torch.tanh(self.stem(x)))))


def build(hidden=6):
    return Net(hidden)


def tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return {"train": (x, y), "test": (x[:24] * 1.5, y[:24])}


def brier(logits, targets):
    p = torch.softmax(logits, 1)
    return ((p - nn.functional.one_hot(targets, p.shape[1])) ** 2).sum(1)


def broken(logits, targets):
    raise KeyError("no such class")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "anchor_pkg").mkdir()
    (tmp_path / "anchor_pkg" / "__init__.py").write_text("")
    (tmp_path / "anchor_pkg" / "objs.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


BASE = ["--model", "anchor_pkg.objs:build", "--data", "anchor_pkg.objs:tensors", "--no-progress"]


def test_compute_with_loss_and_metrics_then_plot_a_metric(user_module, capsys):
    argv = ["compute", *BASE, "--splits", "train,test", "--x", "-1:1:3", "--y", "-1:1:2", "--loss",
            "label_smoothing:0.1", "--metric", "top5", "--metric", "ece", "--metric", "anchor_pkg.objs:brier",
            "--out", "s.h5"]
    assert main(argv) == 0
    s = read_surface(user_module / "s.h5")
    assert s.complete and s.settings["loss"] == "label_smoothing:0.1"
    assert {"train_top5", "test_ece", "train_brier", "test_brier"} <= set(s.values)
    assert np.isfinite(s.values["test_brier"]).all()
    assert main(["plot", "s.h5", "--key", "train_brier", "--kinds", "heatmap", "--format", "png"]) == 0
    assert (user_module / "s_train_brier_heatmap.png").exists() and not (user_module / "s_heatmap.png").exists()
    # resuming with another loss is refused (exit 2), naming the setting
    capsys.readouterr()
    assert main([*argv[:-10], "--loss", "mse", "--out", "s.h5"]) == 2
    err = capsys.readouterr().err
    assert "loss: file has 'label_smoothing:0.1', requested 'mse'" in err and "metrics: file has" in err


def test_failing_user_metric_is_one_line_and_writes_nothing(user_module, capsys):
    assert main(["compute", *BASE, "--x", "-1:1:3", "--metric", "anchor_pkg.objs:broken", "--out", "b.h5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "anchor_pkg.objs:broken" in err and "KeyError" in err
    assert not (user_module / "b.h5").exists()
    assert main(["compute", *BASE, "--x", "-1:1:3", "--loss", "hinge"]) == 2
    assert "unknown loss 'hinge'" in capsys.readouterr().err


def test_plane_through_three_state_dicts(user_module, capsys):
    from anchor_pkg.objs import build, tensors

    for name, seed in (("b.pt", 1), ("c.pt", 2)):
        torch.manual_seed(seed)
        torch.save(build().state_dict(), user_module / name)
    assert main(["compute", *BASE, "--directions", "plane", "--checkpoint-b", "b.pt", "--checkpoint-c", "c.pt",
                 "--x", "0:1:2", "--y", "0:1:2", "--bn", "interpolate", "--out", "p.h5", "--exact"]) == 0
    assert "plane through A (0, 0), B (1, 0), C (0, 1)" in capsys.readouterr().out
    s = read_surface(user_module / "p.h5")
    assert s.direction_info["anchors"] == {"A": [0.0, 0.0], "B": [1.0, 0.0], "C": [0.0, 1.0]}
    assert "checkpoint_c_sha256" in s.settings and "not orthogonalized" in s.direction_info["axes"]
    torch.manual_seed(1)
    b = build().eval()
    x, y = tensors()["train"]
    with torch.no_grad():
        expected = F.cross_entropy(b(x), y).item()
    assert s.values["train_loss"][1, 0] == pytest.approx(expected, rel=1e-5)
    # the default grid frames the three models; BN is recalibrated by default
    assert main(["compute", *BASE, "--directions", "plane", "--checkpoint-b", "b.pt", "--checkpoint-c", "c.pt",
                 "--plane-orthogonal", "--out", "q.h5", "--subset", "0"]) == 0
    q = read_surface(user_module / "q.h5")
    assert q.settings["bn"] == "recalibrate" and q.xcoordinates[0] == -0.5 and q.ycoordinates[-1] == 1.5
    assert main(["compute", *BASE, "--directions", "plane", "--checkpoint-b", "b.pt"]) == 2


def test_hessian_loss_metrics_and_per_block(user_module, capsys):
    argv = ["hessian", *BASE, "--top-k", "1", "--trace", "--probes", "4", "--loss", "mse", "--metric", "margin",
            "--per-block", "--out-dir", "h", "--subset", "0"]
    assert main(argv) == 0
    result = json.loads((user_module / "h" / "hessian.json").read_text())
    assert result["settings"]["loss"] == "mse" and set(result["metrics"]) == {"loss", "acc", "margin"}
    assert result["metrics"]["loss"] == pytest.approx(result["loss"], rel=1e-6)  # the MSE both ways
    rows = result["per_block"]["rows"]
    assert [r["block"] for r in rows] == ["stem", "blocks.0", "blocks.1", "bn", "head"]
    for suffix in (".json", ".csv", ".png", ".pdf"):
        assert (user_module / "h" / f"hessian_blocks{suffix}").exists()
    out = capsys.readouterr().out
    assert "sum of block traces" in out
    assert main(["hessian", *BASE, "--top-k", "1", "--per-block", "--block", "body=blocks", "--out-dir", "g"]) == 0
    rows = json.loads((user_module / "g" / "hessian_blocks.json").read_text())["rows"]
    assert [r["block"] for r in rows] == ["body", "other"]
    assert main(["hessian", *BASE, "--per-block", "--block", "body"]) == 2
    assert main(["hessian", *BASE, "--loss", "ece"]) == 2
