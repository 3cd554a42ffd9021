"""Losses and metrics of surfaces (landscape.objectives): hand-checked values, exact aggregation, files, CLI."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape.directions import random_directions
from landscape.objectives import ObjectiveError, make_objectives, parse_loss, parse_metric, value_label
from landscape.store import read_surface
from landscape.surface import compute_surface, evaluate_grid

from ._models import make_data, make_model


def _logits(n: int = 40, c: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


def test_builtin_values_by_hand():
    z, y = _logits()
    p = torch.softmax(z.double(), 1)
    onehot = F.one_hot(y, 6).double()
    assert parse_loss("mse").value(z, y) == pytest.approx(float(((p - onehot) ** 2).mean()), rel=1e-6)
    assert parse_loss("mse").value(z, y) == pytest.approx(float(F.mse_loss(p, onehot)), rel=1e-6)  # Li et al.
    ls = F.cross_entropy(z, y, label_smoothing=0.1).item()
    assert parse_loss("label_smoothing:0.1").value(z, y) == pytest.approx(ls, rel=1e-6)
    top5 = 100 * np.mean([int(y[i]) in z[i].topk(5).indices.tolist() for i in range(len(y))])
    assert parse_metric("top5").value(z, y) == pytest.approx(top5)
    margin = np.mean([float(z[i, y[i]] - torch.cat([z[i, : y[i]], z[i, y[i] + 1 :]]).max()) for i in range(len(y))])
    assert parse_metric("margin").value(z, y) == pytest.approx(margin, rel=1e-6)
    # ECE by the textbook loop (Guo et al. 2017, 15 bins)
    conf, pred = p.max(1)
    ece = 0.0
    for b in range(15):
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            ece += inside.double().mean() * abs((pred[inside] == y[inside]).double().mean() - conf[inside].mean())
    assert parse_metric("ece").value(z, y) == pytest.approx(100 * float(ece), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), cut=st.integers(1, 59), seed=st.integers(0, 10_000))
def test_any_batch_split_aggregates_exactly(n, cut, seed):
    """Sums over batches: the split's value does not depend on how it is cut (ECE included); float64
    logits, so only the summation order differs."""
    z, y = _logits(n, 7, seed)
    z = z.double()
    cut = min(cut, n - 1)
    objectives = make_objectives("label_smoothing:0.2", ["top5", "ece", "margin", "mse"])
    whole = objectives.accumulator("s")
    whole.update(z, y)
    parts = objectives.accumulator("s")
    parts.update(z[:cut], y[:cut])
    parts.update(z[cut:], y[cut:])
    a, b = whole.result(n), parts.result(n)
    assert a.keys() == b.keys() == {"s_loss", "s_acc", "s_top5", "s_ece", "s_mse", "s_margin"}
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k


def test_bad_specs_name_what_is_wrong():
    with pytest.raises(ObjectiveError, match="unknown loss 'hinge'"):
        parse_loss("hinge")
    with pytest.raises(ObjectiveError, match=r"\[0, 1\)"):
        parse_loss("label_smoothing:1.5")
    with pytest.raises(ObjectiveError, match="label_smoothing:EPS"):
        parse_loss("label_smoothing:x")
    with pytest.raises(ObjectiveError, match="unknown metric 'top3'"):
        parse_metric("top3")
    with pytest.raises(ValueError, match="no_such_module"):
        parse_metric("no_such_module:fn")
    with pytest.raises(ObjectiveError, match="taken"):
        make_objectives("ce", ["margin", "margin=mse"])
    with pytest.raises(ObjectiveError, match="Hessian needs a loss"):
        parse_metric("ece").batch_mean(*_logits())


def test_user_callables_per_sample_or_mean_and_errors(tmp_path, monkeypatch):
    mod = tmp_path / "my_objectives.py"
    mod.write_text(textwrap.dedent("""
        import torch
        def brier(logits, targets):  # per-sample values
            p = torch.softmax(logits, 1)
            return ((p - torch.nn.functional.one_hot(targets, p.shape[1])) ** 2).sum(1)
        def broken(logits, targets):
            raise RuntimeError("boom\\nsecond line")
        def wrong_shape(logits, targets):
            return logits
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_objectives", raising=False)
    z, y = _logits()
    brier = parse_metric("my_objectives:brier")
    assert brier.name == "brier"
    p = torch.softmax(z, 1)
    expected = float(((p - F.one_hot(y, 6)) ** 2).sum(1).mean())
    assert brier.value(z, y) == pytest.approx(expected, rel=1e-6)
    assert parse_metric("b2=my_objectives:brier").name == "b2"
    # a class is instantiated; its scalar batch mean is read as a mean
    assert parse_loss("torch.nn:CrossEntropyLoss").value(z, y) == pytest.approx(F.cross_entropy(z, y).item(), 1e-6)
    with pytest.raises(ObjectiveError) as info:
        parse_metric("my_objectives:broken").value(z, y)
    msg = str(info.value)
    assert "my_objectives:broken" in msg and "RuntimeError: boom" in msg and "\n" not in msg
    with pytest.raises(ObjectiveError, match=r"returned shape \(40, 6\)"):
        parse_metric("my_objectives:wrong_shape").value(z, y)
    # API callables
    assert parse_loss(lambda a, b: F.cross_entropy(a, b, reduction="none")).value(z, y) == pytest.approx(
        F.cross_entropy(z, y).item(), rel=1e-6)


def test_value_labels():
    s = {"loss": "mse", "metrics": ["top5", "b=mod:brier"]}
    assert value_label("train_loss", s) == "train MSE loss"
    assert value_label("test_top5", s) == "test top-5 accuracy (%)"
    assert value_label("train_b", s) == "train b"
    assert value_label("train_loss", {"loss": "ce"}) is None
    assert value_label("train_acc", s) is None


def test_mse_surface_centre_equals_hand_computation(tmp_path):
    """The stored MSE (and metrics) at the centre of a surface equal a direct computation on the model."""
    model = make_model("cnn")
    data = {"train": make_data(48, seed=1), "test": make_data(24, seed=2)}
    d = random_directions(model, ndim=2, seed=0)
    path = compute_surface(tmp_path / "s.h5", model, d, data, "-1:1:3", "-1:1:3", loss="mse",
                           metrics=["top5", "ece", "margin"], progress=False, batch_size=7, exact=True)
    s = read_surface(path)
    assert s.settings["loss"] == "mse" and s.settings["metrics"] == ["top5", "ece", "margin"]
    for split, (x, y) in data.items():
        with torch.no_grad():
            z = model(x).double()
        p = torch.softmax(z, 1)
        mse = float(((p - F.one_hot(y, 4).double()) ** 2).mean())
        assert s.values[f"{split}_loss"][1, 1] == pytest.approx(mse, rel=1e-6)
        assert s.values[f"{split}_acc"][1, 1] == pytest.approx(100 * float((z.argmax(1) == y).double().mean()))
        assert s.values[f"{split}_top5"][1, 1] == pytest.approx(100.0)  # 4 classes: top-5 is every class
        assert s.values[f"{split}_ece"][1, 1] == pytest.approx(parse_metric("ece").value(z, y), rel=1e-6)
        assert np.isfinite(s.values[f"{split}_margin"]).all()
    # the same grid in memory gives the same values; resuming with another loss is refused
    grid = evaluate_grid(model, d, data, "-1:1:3", "-1:1:3", loss="mse", metrics=["top5", "ece", "margin"],
                         batch_size=7, exact=True)
    for k, v in grid.items():
        np.testing.assert_allclose(v, s.values[k], rtol=1e-9)
    with pytest.raises(ValueError, match="loss"):
        compute_surface(path, model, d, data, "-1:1:3", "-1:1:3", progress=False, exact=True)


def test_default_files_keep_li_names_and_cross_entropy(tmp_path):
    model = make_model("cnn")
    data = {"train": make_data(32, seed=1)}
    d = random_directions(model, ndim=1, seed=0)
    path = compute_surface(tmp_path / "d.h5", model, d, data, "-1:1:3", progress=False, exact=True)
    s = read_surface(path)
    assert set(s.values) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    with torch.no_grad():
        ce = F.cross_entropy(model(data["train"][0]).double(), data["train"][1]).item()
    assert s.values["train_loss"][1] == pytest.approx(ce, rel=1e-6)
    assert s.settings["loss"] == "ce" and s.settings["metrics"] == []


def test_failing_user_metric_keeps_points_already_computed(tmp_path, monkeypatch):
    """A metric that raises on the third point: one-line error naming it; the first points stay stored."""
    calls = {"n": 0}

    def flaky(logits, targets):
        calls["n"] += 1
        if calls["n"] > 2:
            raise ValueError("bad batch")
        return logits.new_zeros(logits.shape[0])

    model = make_model("cnn")
    data = {"train": make_data(16, seed=1)}
    d = random_directions(model, ndim=1, seed=0)
    with pytest.raises(ObjectiveError, match="raised ValueError: bad batch"):
        compute_surface(tmp_path / "f.h5", model, d, data, "-1:1:5", metrics=[flaky], progress=False,
                        batch_size=16, exact=True)
    s = read_surface(tmp_path / "f.h5")
    assert int(s.done.sum()) == 2 and math.isfinite(s.values["train_flaky"][s.done][0])


def test_sharded_metrics_merge(tmp_path):
    """Shards of a surface with metrics merge into one file holding every metric at every point."""
    from landscape.merge import merge_parts

    model = make_model("cnn")
    data = {"train": make_data(16, seed=1)}
    d = random_directions(model, ndim=1, seed=0)
    parts = [compute_surface(tmp_path / f"p{i}.h5", model, d, data, "-1:1:5", metrics=["margin"], shard=(i, 2),
                             progress=False, exact=True) for i in (1, 2)]
    report = merge_parts(parts, tmp_path / "m.h5")
    s = read_surface(report.path)
    assert s.complete and np.isfinite(s.values["train_margin"]).all()
    whole = evaluate_grid(model, d, data, "-1:1:5", metrics=["margin"], exact=True)
    np.testing.assert_allclose(s.values["train_margin"], whole["train_margin"], rtol=1e-9)
