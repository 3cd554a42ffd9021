"""A surface does not depend on how it was computed: the cases of issue 20 that involve binary zoo models
and the packed engine, replayed on the models and data of the reports (digits at 16x16, width 0.25)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from bnext.data import load_tensors
from bnext.models import create
from bnext.nn import BinaryConv2d, set_tau
from landscape.bn import seeded_subset
from landscape.directions import interpolation_direction, random_directions
from landscape.engine import TOLERANCE, SurfaceEngine
from landscape.surface import evaluate_grid


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """The reports' randomization: BN affine, binary weights and shifts, PReLU slopes, mix weights; tau 0."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1.0)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
        elif isinstance(m, BinaryConv2d):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)
            if m.shift is not None:
                m.shift.copy_(torch.randn(m.shift.shape, generator=g) * 0.3)
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    for name, p in model.named_parameters():
        if name.endswith("mix_weight"):
            p.copy_(torch.rand(p.shape, generator=g))
    set_tau(model, 0.0)
    return model


def digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_tensors("digits", "train", input_size=16)
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx].contiguous(), y[idx].contiguous()


def zoo(name: str, seed: int = 0, **opts) -> nn.Module:
    """The reports' models: random weights, BN statistics from train-mode forwards of 96 digits in batches of 32."""
    torch.manual_seed(seed)
    model = randomize(create(name, num_classes=10, input_size=16, width=0.25, **opts), seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    xc = digits(96, seed=123)[0]
    with torch.no_grad():
        for s in range(0, 96, 32):
            model(xc[s : s + 32])
    return model.eval()


def assert_within(got: dict, ref: dict) -> None:
    for k in ref:
        if k.endswith("_loss"):
            assert abs(got[k] - ref[k]) <= TOLERANCE["loss_rel"] * abs(ref[k]), (k, got[k], ref[k])
        else:
            assert abs(got[k] - ref[k]) <= TOLERANCE["acc_points"], (k, got[k], ref[k])


def test_fused_bnext_parts_are_verified_off_the_origin():
    """Case 2: at x = -0.25 the fused float parts flip a binary activation of one image (5.8e-3 relative);
    the probe at the origin could not see it. The audit finds the image and the point is recomputed."""
    model = zoo("bnext18")
    d = {"train": digits(128)}
    dirs = random_directions(model, ndim=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with SurfaceEngine(copy.deepcopy(model), dirs, d) as fast:
            assert fast.settings["forward"] == "packed" and fast.settings["forward_info"]["fused_float"]
            got = fast.evaluate(-0.25)
            assert fast.counters["audit_failed_points"] == 1
    with SurfaceEngine(model, dirs, d, exact=True, forward="torch") as ref:
        want = ref.evaluate(-0.25)
    assert_within(got, want)


def test_refused_binary_model_runs_as_it_is_and_says_why_in_one_line():
    """Case 3: a model the packed engine refuses (sign_zero=0) fell back to BN folding + channels-last."""
    model = zoo("bnext18", seed=2, sign_zero=0)
    d = {"train": digits(128)}
    dirs = random_directions(model, ndim=1, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with SurfaceEngine(model, dirs, d) as e:
            s = e.settings
            got = [e.evaluate(x) for x in (-0.6, 0.35)]
    assert s["forward"] == "torch" and s["bn_folded_pairs"] == 0 and not s["channels_last"] and s["sign_sensitive"]
    assert set(s["conv_algorithms"].values()) == {"torch"}
    refusal = [str(w.message) for w in caught if "packed engine refused" in str(w.message)]
    assert len(refusal) == 1 and "sign_zero=0" in refusal[0] and "falling back to the model's own forward" in refusal[0]
    assert "\n" not in refusal[0]
    with SurfaceEngine(model, dirs, d, exact=True, forward="torch") as e:
        want = [e.evaluate(x) for x in (-0.6, 0.35)]
    for a, b in zip(got, want):
        assert_within(a, b)


def test_interpolating_towards_a_progressive_checkpoint_does_not_crash():
    """Case 5: the line from a fully binary model to one with tau > 0 died at x = 1 in repack_ (default and
    exact); now such points fall back to the model's own forward, said once and counted."""
    a = zoo("bnext18", seed=0)
    b = zoo("bnext18", seed=1)
    set_tau(b, 0.111)
    line = interpolation_direction(a, b)
    d = {"train": digits(64)}
    ref = evaluate_grid(a, line, d, "0:1:3", bn="interpolate", exact=True, forward="torch")
    for opts in ({}, {"exact": True}):
        with pytest.warns(UserWarning, match="fast path failed at a grid point .*PackingError"):
            with SurfaceEngine(a, line, d, **opts) as e:
                assert e.settings["forward"] == "packed"
                got = [e.evaluate(x) for x in (0.0, 0.5, 1.0)]
                assert e.counters["fallback_points"] == 2
        for i, g in enumerate(got):
            assert_within(g, {k: v[i] for k, v in ref.items()})


def test_packed_probe_difference_is_stored():
    """Case 6: with the packed provider the probe difference was not stored."""
    model = zoo("bireal18")
    with SurfaceEngine(model, random_directions(model, ndim=1, seed=0), {"train": digits(32)}) as e:
        s = e.settings
    assert s["forward"] == "packed" and s["fast_path_probe_diff"] == s["forward_info"]["probe_diff"] == 0.0


def test_recalibrated_interpolation_is_the_same_at_every_batch_size():
    """Case 1 ("Done when"): the interpolation with BN recalibration gives the same surface at batch sizes
    32, 128 and 512 (packed engine) and exact (the model's own forward), within the contract."""
    a, b = zoo("bnext18", seed=0), zoo("bnext18", seed=4)
    line = interpolation_direction(a, b)
    d = {"train": digits(64, seed=3)}
    calib = seeded_subset(load_tensors("digits", "train", input_size=16)[0], 160, 0)
    grid = "-0.5:1.5:3"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = evaluate_grid(a, line, d, grid, bn="recalibrate", calibration=calib, exact=True, forward="torch")
        for bs in (32, 128, 512):
            got = evaluate_grid(a, line, d, grid, bn="recalibrate", calibration=calib, batch_size=bs)
            for i in range(3):
                assert_within({k: v[i] for k, v in got.items()}, {k: v[i] for k, v in ref.items()})


def test_binary_layers_are_recognised_by_the_engine():
    model = zoo("bnext18")
    from landscape.engine.audit import sign_modules

    assert {type(m) for m in sign_modules(model)} == {BinaryConv2d}
