"""The landscape engine's default fast path keeps its tolerance contract on every zoo model.

Contract (``landscape.engine.TOLERANCE``, README "Speed"): at every grid point the relative loss
difference is <= 5e-3 and the accuracy within 0.5 percentage points of the unfused float model
(``exact=True, forward="torch"``: the model's own forward at Li et al.'s batch 128). ``exact=True``
with the packed provider is bit-identical to it.
"""

from __future__ import annotations

import json

import h5py
import pytest
import torch
from torch import nn

from bnext.models import create, list_models, model_options
from bnext.nn import BinaryConv2d
from landscape.directions import random_directions
from landscape.engine import TOLERANCE, SurfaceEngine
from landscape.grid import parse_grid
from landscape.surface import compute_surface, evaluate_grid

from .conftest import randomize

GRID = "-0.5:0.5:2"


def zoo_model(name: str, width: float, input_size: int = 16, seed: int = 0) -> nn.Module:
    """A zoo model with random binary weights/shifts/slopes and BN statistics from train-mode forwards."""
    opts = {"width": width} if "width" in model_options(name) else {}
    torch.manual_seed(seed)
    model = randomize(create(name, num_classes=10, input_size=input_size, **opts), seed)
    g = torch.Generator().manual_seed(seed + 1)
    calib = torch.randn(48, 3, input_size, input_size, generator=g)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the forwards below
    model.train()
    with torch.no_grad():
        for s in range(0, 48, 16):
            model(calib[s : s + 16])
    return model.eval()


def data(input_size: int = 16, n: int = 40, seed: int = 2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {"train": (torch.randn(n, 3, input_size, input_size, generator=g), torch.randint(0, 10, (n,), generator=g))}


def assert_within_contract(got: dict, ref: dict) -> None:
    for key in ref:
        if key.endswith("_loss"):
            rel = abs(got[key] - ref[key]) / max(abs(ref[key]), 1e-12)
            assert rel <= TOLERANCE["loss_rel"], (key, got[key], ref[key], rel)
        else:
            assert abs(got[key] - ref[key]) <= TOLERANCE["acc_points"], (key, got[key], ref[key])


def check_model(name: str, width: float, input_size: int = 16) -> None:
    model = zoo_model(name, width, input_size)
    d = data(input_size)
    dirs = random_directions(model, seed=0)
    ref = evaluate_grid(model, dirs, d, GRID, GRID, exact=True, forward="torch")
    fast = evaluate_grid(model, dirs, d, GRID, GRID)  # the defaults
    for i in range(2):
        for j in range(2):
            assert_within_contract({k: v[i, j] for k, v in fast.items()}, {k: v[i, j] for k, v in ref.items()})
    with SurfaceEngine(model, dirs, d) as engine:
        binary = any(isinstance(m, BinaryConv2d) for m in model.modules())
        assert engine.settings["forward"] == ("packed" if binary else "torch")
    if binary:  # exact mode keeps bit-identity through the packed engine
        exact = evaluate_grid(model, dirs, d, GRID, GRID, exact=True)
        for k in ref:
            assert (exact[k] == ref[k]).all(), (name, k, exact[k], ref[k])


SLOW = {"bnext_m", "bnext_l"}  # the deepest of the family: seconds each


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()]
)
def test_fast_path_contract_width_025(name):
    check_model(name, 0.25)


@pytest.mark.parametrize("name", ["bireal18", "xnornet18", "real2binary18", "bnext18", "bnext_t"])
def test_fast_path_contract_odd_channels(name):
    check_model(name, 0.2)  # 13, 26, 51, 102 channels (bnext_t: 6, 13, 26, ...; fused float parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "bnext18", "bireal18", "binarynet18"])
def test_fast_path_contract_width_1(name):
    check_model(name, 1.0, input_size=8)


def test_bireal_packed_matches_float_bit_for_bit():
    """Regression: the simulated Bi-Real/XNOR-Net conv summed +-alpha terms (rounding that depended on
    the conv algorithm) and the packed engine multiplied the integer by alpha once; a pre-activation within
    an ulp of 0 then flipped sign ("packed forward differs by 0.498"). Both now compute integer * alpha."""
    from bnext.packed import pack

    model = zoo_model("bireal18", 1.0, input_size=8)
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert torch.equal(pack(model)(x), model(x))


def test_settings_stored_and_batch_rule_deterministic(tmp_path):
    model = zoo_model("bnext18", 0.25)
    d = data()
    dirs = random_directions(model, seed=0)
    path = compute_surface(tmp_path / "s.h5", model, dirs, d, "0:0:1", "0:0:1", progress=False)
    with h5py.File(path, "r") as f:
        engine = json.loads(f.attrs["engine"])
    assert engine["forward"] == "packed" and engine["exact"] is False
    assert engine["tolerance"] == TOLERANCE
    with SurfaceEngine(model, dirs, d) as a, SurfaceEngine(model, dirs, d) as b:
        assert a.batch_size == b.batch_size == engine["batch_size"]
    with SurfaceEngine(model, dirs, d, exact=True) as e:
        assert e.settings["batch_size"] == min(128, 40)


def test_vmap_points_per_forward_on_cpu():
    """The CUDA default (several grid points per forward via vmap) runs and agrees on the CPU."""
    model = zoo_model("resnet18", 0.25)
    d = data()
    dirs = random_directions(model, seed=0)
    xs = parse_grid(GRID)
    ref = evaluate_grid(model, dirs, d, xs, xs, exact=True, forward="torch")
    got = evaluate_grid(model, dirs, d, xs, xs, points_per_forward=3)
    for i in range(2):
        for j in range(2):
            assert_within_contract({k: v[i, j] for k, v in got.items()}, {k: v[i, j] for k, v in ref.items()})


def test_cuda_default_falls_back_when_vmap_cannot_run_the_model():
    """On CUDA the default is several points per forward; models vmap cannot run (the binarizers are
    autograd Functions without ``setup_context``) fall back to one point per forward."""
    d = data()
    for name, works in (("resnet18", True), ("bnext18", False)):
        model = zoo_model(name, 0.25)
        with SurfaceEngine(model, random_directions(model, seed=0), d, forward="torch") as engine:
            assert engine._vmap_works(d["train"][0][:2]) is works
