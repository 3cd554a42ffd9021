"""Differential test: the engine's defaults against the exact path, on models hypothesis draws.

Random small models (float or binary, BatchNorm with or without running statistics, channel counts
that do and do not take Winograd, residual or plain), random directions (filter-normalized random,
1D or 2D, or the line to a second model with BN recalibration) and random off-centre points; at
every drawn point the defaults must agree with ``exact=True, forward="torch"`` within
:data:`landscape.engine.TOLERANCE`. Bounded: a fixed number of examples, no deadline.
"""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from landscape.directions import interpolation_direction, random_directions
from landscape.engine import TOLERANCE, SurfaceEngine

from ._models import TinyBinaryConv


class _Drawn(nn.Module):
    def __init__(self, c: int, binary: bool, stats: bool, residual: bool, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c, track_running_stats=stats)
        conv = TinyBinaryConv if binary else nn.Conv2d
        self.conv = conv(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.residual = residual
        self.fc = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn0(self.stem(x)))
        z = self.bn1(self.conv(h))
        h = torch.relu(z + h) if self.residual else torch.relu(z)
        return self.fc(h.mean((2, 3)))


def _model(c: int, binary: bool, stats: bool, residual: bool, seed: int, calib: Tensor) -> nn.Module:
    torch.manual_seed(seed)
    m = _Drawn(c, binary, stats, residual)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m.bn0, m.bn1):
            bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=g) * 0.3)
        m.train()(calib)  # running statistics of a few inputs (default momentum)
    return m.eval()


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    c=st.sampled_from([4, 32]),
    binary=st.booleans(),
    stats=st.booleans(),
    residual=st.booleans(),
    kind=st.sampled_from(["random1d", "random2d", "interpolate"]),
    seed=st.integers(0, 10_000),
    point=st.tuples(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0)),
    n=st.sampled_from([7, 40]),
)
def test_defaults_agree_with_the_exact_path(c, binary, stats, residual, kind, seed, point, n):
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    calib = torch.randn(24, 3, 8, 8, generator=g) * 1.5 + 0.2
    model = _model(c, binary, stats, residual, seed, calib)
    opts: dict = {}
    if kind == "interpolate":
        dirs = interpolation_direction(model, _model(c, binary, stats, residual, seed + 7, calib))
        opts = {"bn_recalibrate": True, "calibration": calib}
    else:
        dirs = random_directions(model, ndim=1 if kind == "random1d" else 2, seed=seed)
    px, py = point if kind == "random2d" else (point[0], 0.0)
    data = {"train": (x, y)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SurfaceEngine(model, dirs, data, **opts) as fast:
            got = fast.evaluate(px, py)
        with SurfaceEngine(model, dirs, data, exact=True, forward="torch", **opts) as exact:
            want = exact.evaluate(px, py)
    assert abs(got["train_loss"] - want["train_loss"]) <= TOLERANCE["loss_rel"] * abs(want["train_loss"]), (got, want)
    assert abs(got["train_acc"] - want["train_acc"]) <= TOLERANCE["acc_points"], (got, want)
