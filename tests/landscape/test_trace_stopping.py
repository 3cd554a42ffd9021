"""Hutchinson's trace stops at a stated relative standard error (or at its cap, and says so)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature.hessian import Hessian


def _model() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g))


def _rel(samples: list[float]) -> float:
    a = np.asarray(samples)
    return float(a.std(ddof=1) / math.sqrt(len(a)) / abs(a.mean()))


def test_trace_stops_at_the_first_probe_count_that_reaches_the_target():
    model, data = _model()
    h = Hessian(model, data)
    fixed = h.trace(400, seed=3, target=None)
    target = 2.0 * _rel(fixed.samples[:30])  # reachable well before the cap
    tr = h.trace(400, seed=3, target=target, min_probes=5)
    assert tr.converged and tr.target == target and tr.max_probes == 400
    assert tr.samples == fixed.samples[: tr.probes]  # the same probe sequence, cut where the rule says
    assert tr.rel_stderr <= target
    assert all(_rel(fixed.samples[:n]) > target for n in range(5, tr.probes))  # not one probe later than needed
    assert tr.hvps == tr.probes


def test_trace_reports_the_cap_when_the_target_is_out_of_reach():
    model, data = _model()
    tr = Hessian(model, data).trace(12, seed=0, target=1e-9)
    assert not tr.converged and tr.probes == 12 == tr.max_probes and tr.rel_stderr > 1e-9
    assert tr.as_dict()["converged"] is False


def test_trace_rejects_a_bad_target():
    model, data = _model()
    with pytest.raises(ValueError, match="target"):
        Hessian(model, data).trace(10, target=0.0)
