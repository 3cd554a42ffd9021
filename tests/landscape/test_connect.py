"""Mode connectivity (landscape.connect) on a two-layer linear network whose barriers are known by construction.

The network computes logits ``(z, -z)`` with ``z = w2 * w1 * x``; on data with ``|x| = 1`` and the label given
by the sign of ``x`` the loss is ``log(1 + exp(-2 w1 w2))``, a function of the product ``p = w1 w2`` only.
Between ``A = (a, c/a)`` and ``B = (-a, -c/a)`` (the two branches of the hyperbola ``p = c``) every path must
cross ``p = 0``, where the loss is ``log 2``: the straight line reaches it at t = 1/2 (its barrier is exactly
``log 2 - log(1 + exp(-2c))``) and no curve can do better.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from landscape.connect import Curve, barrier, connect, fit_curve
from landscape.store import read_arrays, read_surface

from ._models import make_model


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, 1, bias=False)
        self.out = nn.Linear(1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.out(self.hidden(x))
        return torch.cat([z, -z], dim=1)


def state(w1: float, w2: float) -> dict[str, torch.Tensor]:
    return {"hidden.weight": torch.tensor([[w1]]), "out.weight": torch.tensor([[w2]])}


def sign_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).reshape(-1, 1)
    return x, (x[:, 0] < 0).long()


def noisy_data(n: int = 100, q: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """x = 1 always, label 1 for a share q: the loss has its minimum at p* = atanh(1 - 2q)."""
    x = torch.ones(n, 1)
    y = (torch.arange(n) < int(q * n)).long()
    return x, y


def test_line_barrier_between_disconnected_minima_is_known_and_no_curve_beats_it(tmp_path):
    a, c = 2.0, 1.5
    data = {"test": sign_data()}
    res = connect(tmp_path, TwoLayer(), state(a, c / a), state(-a, -c / a), sign_data(), data, kind="bezier",
                  bends=1, points=101, steps=150, batch_size=32, lr=0.05, progress=False)
    expected = math.log(2) - math.log1p(math.exp(-2 * c))
    assert res.line_metrics["test_loss_barrier"] == pytest.approx(expected, rel=1e-6)
    assert res.line_metrics["test_barrier_t"] == pytest.approx(0.5)
    # topology: every path crosses p = 0; on a grid of spacing 1/100 the sampled maximum misses log 2 by < 0.05
    assert res.curve_metrics["test_loss_barrier"] >= expected - 0.05
    line = read_surface(res.line_path)
    assert line.settings["path"] == "line" and line.complete
    assert line.metrics["barrier"]["test_loss_barrier"] == pytest.approx(expected, rel=1e-6)
    lo, hi = json.loads(line.metrics["barrier"]["test_loss_barrier_ci95"])
    assert lo <= expected + 1e-6 and hi >= expected - 1e-6  # all samples alike: a point interval


def test_fitted_bezier_finds_the_low_path_that_the_line_misses(tmp_path):
    x, y = noisy_data()
    pstar = 0.5 * math.log(0.8 / 0.2)  # argmin over p of 0.8 log(1 + e^-2p) + 0.2 log(1 + e^2p)
    a_state, b_state = state(3.0, pstar / 3.0), state(pstar / 3.0, 3.0)  # same branch, far apart
    res = connect(tmp_path, TwoLayer(), a_state, b_state, (x, y), {"train": (x, y)}, kind="bezier", bends=1,
                  points=21, steps=300, batch_size=100, lr=0.05, progress=False)
    line_b = res.line_metrics["train_loss_barrier"]
    curve_b = res.curve_metrics["train_loss_barrier"]
    assert line_b > 0.05  # the chord passes through products far above p*
    assert curve_b < 0.25 * line_b
    bends, attrs = read_arrays(res.curve_path, "curve")
    assert set(bends) == {"bend_1/hidden.weight", "bend_1/out.weight"} and attrs["kind"] == "bezier"


def test_fit_resumes_from_its_state_file(tmp_path):
    x, y = noisy_data()
    args = dict(steps=40, batch_size=16, lr=0.05, seed=3, progress=False, save_every=10)
    full = fit_curve(TwoLayer(), Curve.initial("polychain", state(3, 0.2), state(0.2, 3), 2), x, y, **args)
    sp = tmp_path / "fit.pt"
    fit_curve(TwoLayer(), Curve.initial("polychain", state(3, 0.2), state(0.2, 3), 2), x, y,
              **{**args, "steps": 20}, state_path=sp)
    assert torch.load(sp, weights_only=True)["step"] == 20
    resumed = fit_curve(TwoLayer(), Curve.initial("polychain", state(3, 0.2), state(0.2, 3), 2), x, y, **args,
                        state_path=sp)
    for b_full, b_res in zip(full.bends, resumed.bends, strict=True):
        for k in b_full:
            torch.testing.assert_close(b_full[k], b_res[k])


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["bezier", "polychain"]), bends=st.integers(1, 4), t=st.floats(0, 1))
def test_curve_ends_and_coefficients(kind, bends, t):
    c = Curve.initial(kind, state(1.0, 2.0), state(-3.0, 5.0), bends)
    assert sum(c.coefficients(t)) == pytest.approx(1.0)
    torch.testing.assert_close(c.point(0.0)["hidden.weight"], torch.tensor([[1.0]]))
    torch.testing.assert_close(c.point(1.0)["out.weight"], torch.tensor([[5.0]]))
    # bends initialized on the chord: the initial curve stays on the line through A and B
    p = c.point(t)
    s = (float(p["hidden.weight"]) - 1.0) / -4.0
    assert float(p["out.weight"]) == pytest.approx(2.0 + 3.0 * s, abs=1e-5)


def test_barrier_definition_and_errors():
    assert barrier([1.0, 3.0, 2.0]) == pytest.approx(1.5)
    assert barrier(np.array([0.5, 0.2, 0.5])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="finite"):
        barrier([1.0, float("nan")])
    with pytest.raises(ValueError, match="bend"):
        Curve.initial("bezier", state(1, 1), state(2, 2), 0)


def test_batchnorm_model_recalibrated_and_resumed(tmp_path, data):
    model = make_model("cnn")
    a = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    b = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() and "running" not in k else v.clone()
         for k, v in a.items()}
    calib = data["train"][0][:32]
    kw = dict(kind="polychain", bends=1, points=5, steps=4, batch_size=16, calibration=calib, progress=False)
    res = connect(tmp_path, model, a, b, data["train"], data, **kw)
    s = read_surface(res.curve_path)
    assert s.settings["bn"] == "recalibrate" and s.complete and np.isfinite(s.values["test_loss"]).all()
    before = s.values["test_loss"].copy()
    res2 = connect(tmp_path, model, a, b, data["train"], data, **kw)  # resumes: nothing recomputed
    np.testing.assert_array_equal(read_surface(res2.curve_path).values["test_loss"], before)
    res3 = connect(tmp_path, model, a, b, data["train"], data, **kw, mode="new")  # a new file next to it
    assert res3.curve_path.name == "connect_polychain1_curve-1.h5" and read_surface(res3.curve_path).complete
    torch.testing.assert_close(model.state_dict()["stem.1.running_mean"], a["stem.1.running_mean"])
