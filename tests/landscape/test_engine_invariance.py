"""A surface does not depend on how it was computed (issue 20, cases on small landscape-only models).

Batch-invariant BN recalibration, batch-dependent models, per-point fallbacks instead of crashes, the
audit of every fast point, and metadata that says what ran. The packed-engine cases are in
``tests/packed/test_engine_invariance_packed.py``.
"""

from __future__ import annotations

import copy
import json
import warnings

import h5py
import pytest
import torch
from torch import Tensor, nn

from landscape.bn import recalibrate_bn, seeded_subset
from landscape.directions import interpolation_direction, random_directions
from landscape.engine import TOLERANCE, SurfaceEngine
from landscape.engine.providers import register_forward_provider, unregister_forward_provider
from landscape.store import SettingsMismatchError
from landscape.surface import compute_surface, evaluate_grid

from ._models import make_data, make_model


def within_contract(got: dict, ref: dict) -> bool:
    for k in ref:
        if k.endswith("_loss") and abs(got[k] - ref[k]) > TOLERANCE["loss_rel"] * abs(ref[k]):
            return False
        if k.endswith("_acc") and abs(got[k] - ref[k]) > TOLERANCE["acc_points"]:
            return False
    return True


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    return [t.clone() for n, t in model.named_buffers() if n.endswith(("running_mean", "running_var"))]


def test_recalibration_is_the_population_statistic_whatever_the_chunk():
    model = make_model("cnn", seed=3)
    x = make_data(90, seed=4)[0] * 2 + 0.5
    got = {}
    for chunk in (None, 64, 16, 7):
        m = copy.deepcopy(model)
        recalibrate_bn(m, x, chunk)
        got[chunk] = _bn_buffers(m)
        assert not any(b.training for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    for chunk in (64, 16, 7):
        for a, b in zip(got[None], got[chunk]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # independently: one train-mode forward of the whole set; running_var there is the unbiased estimate
    ref = copy.deepcopy(model)
    counts = {}
    for mod in ref.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 1.0
            mod.register_forward_pre_hook(lambda m, a: counts.__setitem__(m, a[0].numel() // a[0].shape[1]))
    with torch.no_grad():
        ref.train()(x)
    want = []
    for mod in ref.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = counts[mod]
            want += [mod.running_mean, mod.running_var * (n - 1) / n]
    for a, b in zip(got[None], want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_recalibrated_line_does_not_depend_on_the_batch_size(data):
    """Case 1: the statistics used to be per-batch averages at the evaluation batch size."""
    a, b = make_model("cnn", seed=0), make_model("cnn", seed=5)
    line = interpolation_direction(a, b)
    xs, ys = make_data(96, seed=7)
    calib = seeded_subset(xs, 80, seed=0) * 3 + 1  # far from the models' statistics: the cut matters
    d = {"train": (xs, ys)}
    points = "-0.5:1.5:5"
    ref = evaluate_grid(a, line, d, points, bn="recalibrate", calibration=calib, exact=True, forward="torch")
    for opts in ({"batch_size": 8}, {"batch_size": 32}, {}):
        got = evaluate_grid(a, line, d, points, bn="recalibrate", calibration=calib, **opts)
        torch.testing.assert_close(torch.as_tensor(got["train_loss"]), torch.as_tensor(ref["train_loss"]),
                                   rtol=1e-5, atol=0)


def test_resume_refuses_other_calibration_and_other_evaluation_settings(data, tmp_path):
    a, b = make_model("cnn", seed=0), make_model("cnn", seed=5)
    line = interpolation_direction(a, b)
    d = {"train": data["train"]}
    calib = seeded_subset(data["train"][0], 32, seed=1)
    path = tmp_path / "l.h5"
    compute_surface(path, a, line, d, "0:1:3", calibration=calib, calibration_seed=1, progress=False)
    with pytest.raises(SettingsMismatchError, match="bn_calibration"):
        compute_surface(path, a, line, d, "0:1:3", calibration=seeded_subset(data["train"][0], 32, seed=2),
                        calibration_seed=2, progress=False)
    with pytest.raises(SettingsMismatchError, match="evaluation"):
        compute_surface(path, a, line, d, "0:1:3", calibration=calib, calibration_seed=1, precision="bf16",
                        progress=False)
    with pytest.raises(SettingsMismatchError, match="evaluation"):
        compute_surface(path, a, line, d, "0:1:3", calibration=calib, calibration_seed=1, exact=True,
                        progress=False)
    with h5py.File(path, "r") as f:
        runs = json.loads(f.attrs["engine_runs"])
    assert len(runs) == 1 and runs[0]["points"] == 3 and runs[0]["indices"] == "0-2"
    assert runs[0]["settings"]["bn_recalibration"]["method"] == "population-float64"
    assert runs[0]["counters"]["points"] == 3


class _BatchStatsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6, track_running_stats=False)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_batch_dependent_model_is_evaluated_at_the_reference_batch():
    """Case 4: BN without running statistics normalizes with the batch's statistics."""
    torch.manual_seed(0)
    model = _BatchStatsNet().eval()
    d = {"train": make_data(300, seed=1)}
    dirs = random_directions(model, ndim=1, seed=0)
    with pytest.warns(UserWarning, match="depends on the batch"):
        with SurfaceEngine(model, dirs, d) as e:
            assert e.settings["batch_dependent"] and e.batch_size == 128 and e.settings["audit"] is None
            got = [e.evaluate(x) for x in (-10.0, 0.5)]
    with SurfaceEngine(model, dirs, d, exact=True, forward="torch") as e:
        want = [e.evaluate(x) for x in (-10.0, 0.5)]
    assert got == want


class _BroadcastNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Parameter(torch.randn(1, 32, 1, 1) * 0.1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem(x))
        return self.fc(torch.relu(self.conv(h) + self.b).mean((2, 3)))


def test_broadcasting_add_after_a_conv_does_not_crash():
    """Case 5: ``relu(conv(x) + b)`` with b of shape (1, C, 1, 1) used to be fused as a residual."""
    torch.manual_seed(0)
    model = _BroadcastNet().eval()
    g = torch.Generator().manual_seed(1)
    d = {"train": (torch.randn(24, 3, 16, 16, generator=g), torch.randint(0, 10, (24,), generator=g))}
    dirs = random_directions(model, ndim=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = evaluate_grid(model, dirs, d, "-1:1:3")
    ref = evaluate_grid(model, dirs, d, "-1:1:3", exact=True, forward="torch")
    for i in range(3):
        assert within_contract({k: v[i] for k, v in fast.items()}, {k: v[i] for k, v in ref.items()})


class _NoSingleSample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] < 2:
            raise RuntimeError("this model needs at least 2 samples per batch")
        return self.fc(x)


def test_automatic_batch_size_needs_no_single_sample_forward():
    """Case 5: batch_size='auto' measured activations with a 1-sample forward, even with exact=True."""
    torch.manual_seed(0)
    model = _NoSingleSample().eval()
    g = torch.Generator().manual_seed(0)
    d = {"train": (torch.randn(20, 12, generator=g), torch.randint(0, 4, (20,), generator=g))}
    dirs = random_directions(model, ndim=1, seed=0)
    for opts in ({"exact": True}, {}):
        with SurfaceEngine(model, dirs, d, **opts) as e:
            assert e.batch_size == 20 and e.evaluate(0.5)["train_loss"] > 0


def test_explicit_points_per_forward_falls_back_when_vmap_cannot_run_the_model(binary_net, data):
    """Case 5: an explicit points_per_forward=2 on a model with autograd Functions raised in vmap."""
    dirs = random_directions(binary_net, ndim=1, seed=0)
    d = {"train": data["train"]}
    with pytest.warns(UserWarning, match="vmap"):
        got = evaluate_grid(binary_net, dirs, d, "-1:1:4", points_per_forward=2)
    ref = evaluate_grid(binary_net, dirs, d, "-1:1:4", exact=True, forward="torch")
    for i in range(4):
        assert within_contract({k: v[i] for k, v in got.items()}, {k: v[i] for k, v in ref.items()})


class _FlakyForward:
    """A provider's forward that raises or is wrong away from the origin (a fast path that breaks)."""

    def __init__(self, mode: str, origin: float):
        self.mode, self.origin = mode, origin

    def __call__(self, model: nn.Module):
        moved = abs(float(model.fc.weight.detach().sum()) - self.origin) > 1e-6

        def forward(x: Tensor) -> Tensor:
            if moved and self.mode == "raise":
                raise ValueError("cannot pack these weights\nsecond line of detail")
            out = model(x)
            return out + 3.0 * torch.arange(out.shape[1]) if moved else out

        return forward


@pytest.mark.parametrize("mode", ["raise", "wrong"])
def test_a_failing_or_wrong_fast_path_is_replaced_at_that_point(cnn, data, mode):
    """Cases 2 and 5: a fast path that fails (raises, or is wrong off the origin) at a point: that point is
    recomputed on the reference path, said once, and counted."""
    origin = float(cnn.fc.weight.detach().sum())
    register_forward_provider("flaky", lambda m: True, lambda m, probe, exact: _FlakyForward(mode, origin))
    try:
        dirs = random_directions(cnn, ndim=1, seed=0)
        d = {"train": data["train"]}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with SurfaceEngine(cnn, dirs, d) as e:
                assert e.settings["forward"] == "flaky"
                got = [e.evaluate(x) for x in (0.0, -0.5, 0.5)]
                counters = dict(e.counters)
                fallbacks = e.settings["fallbacks"]
    finally:
        unregister_forward_provider("flaky")
    with SurfaceEngine(cnn, dirs, d, exact=True, forward="torch") as e:
        want = [e.evaluate(x) for x in (0.0, -0.5, 0.5)]
    for a, b in zip(got, want):
        assert within_contract(a, b)
    key = "fallback_points" if mode == "raise" else "audit_failed_points"
    assert counters[key] == 2 and counters["points"] == 3
    said = [str(w.message) for w in caught if "reference path" in str(w.message) or "own forward" in str(w.message)]
    assert len(said) == 1 and len(fallbacks) == 1 and "\n" not in said[0]


def test_bf16_records_its_deviation_and_never_claims_the_contract(cnn, data):
    """Case 6: the engine attribute claimed the contract for bf16."""
    dirs = random_directions(cnn, ndim=1, seed=0)
    with SurfaceEngine(cnn, dirs, {"train": data["train"]}, precision="bf16") as e:
        s = e.settings
        e.evaluate(0.5)
        assert e.counters["max_audit_share"] > 0  # measured against fp32 at every point, not recomputed
    assert s["tolerance"] is None and s["precision"] == "bf16"
    assert s["precision_deviation"]["probe_max_logit_diff"] > 0
    with SurfaceEngine(cnn, dirs, {"train": data["train"]}) as e:
        assert e.settings["tolerance"] == TOLERANCE and e.settings["precision_deviation"] is None


class _Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(torch.relu(self.stem(x)))).mean((2, 3)))


def test_conv_algorithms_are_recorded_per_split():
    """Case 6: conv_algorithms came from the first split's probe even when another split ran another."""
    from landscape.engine.winograd import WinogradConv2d

    torch.manual_seed(0)
    model = _Plain().eval()
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (16,), generator=g)
    d = {"train": (torch.randn(16, 3, 32, 32, generator=g), y), "test": (torch.randn(16, 3, 5, 5, generator=g), y)}
    with SurfaceEngine(model, random_directions(model, ndim=1, seed=0), d, winograd=True) as e:
        per_split = e.settings["conv_algorithms_per_split"]
        merged = e.settings["conv_algorithms"]
        for split in ("train", "test"):
            with torch.inference_mode():
                e._forward(d[split][0][:2])
            ran = {n: m.last_algorithm for n, m in e._forward.named_modules() if isinstance(m, WinogradConv2d)}
            assert all(per_split[split][n] == a for n, a in ran.items())
    assert per_split["train"]["conv"] != per_split["test"]["conv"]
    assert "(train)" in merged["conv"] and "(test)" in merged["conv"]
