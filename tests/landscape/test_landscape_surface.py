"""The evaluation engine and resumable surface computation."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape.directions import Directions, random_directions
from landscape.engine import SurfaceEngine, find_conv_bn_pairs, fold_batchnorm
from landscape.grid import parse_grid
from landscape.store import SettingsMismatchError, read_surface
from landscape.surface import compute_surface, evaluate_grid

from ._models import make_model, reference_loss

XS, YS = "-1:0.5:4", "-0.4:1.2:5"  # non-square and asymmetric


@pytest.mark.parametrize(
    "spec, match",
    [
        ("1:2", "2 fields"),
        ("a:1:3", "must be numbers"),
        ("0:1:2.5", "whole number"),
        ("0:1:0", "at least 1"),
        ("1:0:3", "larger than max"),
        ("0:1:1", "min == max"),
        ("0:inf:3", "finite"),
    ],
)
def test_parse_grid_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_grid(spec, "x")


def test_parse_grid():
    assert parse_grid("-1:1:5").tolist() == [-1, -0.5, 0, 0.5, 1]
    assert parse_grid("0.5:0.5:1").tolist() == [0.5]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_values_orientation_and_restoration(cnn, data):
    """f[i, j] is the loss at (x[i], y[j]) on a non-square grid, exactly loss(theta + x dx + y dy)."""
    d = random_directions(cnn, seed=0)
    before = _state(cnn)
    cnn.stem[0].weight.requires_grad_(False)  # mixed requires_grad must come back as it was
    cnn.train()
    out = evaluate_grid(cnn, d, data, XS, YS)
    x, y = parse_grid(XS), parse_grid(YS)
    assert out["train_loss"].shape == (4, 5) and out["test_acc"].shape == (4, 5)
    for i, j in [(0, 4), (3, 0), (1, 2), (2, 3)]:
        for split in ("train", "test"):
            loss, acc = reference_loss(cnn, d, x[i], y[j], data[split])
            assert abs(out[f"{split}_loss"][i, j] - loss) <= 1e-5
            assert abs(out[f"{split}_acc"][i, j] - acc) <= 1e-9
    after = _state(cnn)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not cnn.stem[0].weight.requires_grad and cnn.fc.weight.requires_grad
    assert cnn.training and all(m.training for m in cnn.modules())


def test_restoration_after_error(cnn, data):
    d = random_directions(cnn, seed=0)
    before = _state(cnn)

    def broken(model):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        evaluate_grid(cnn, d, data, "0:1:2", "0:1:2", forward_factory=broken)
    assert all(torch.equal(v, cnn.state_dict()[k]) for k, v in before.items())


def test_bn_folding_exact_and_selective(cnn, binary_net, data):
    assert find_conv_bn_pairs(cnn) == [("stem.0", "stem.1"), ("block.conv", "block.bn")]
    # the binary conv subclass is never folded; the real stem is
    assert find_conv_bn_pairs(binary_net) == [("stem.0", "stem.1")]
    fused, pairs = fold_batchnorm(cnn)
    assert len(pairs) == 2 and isinstance(fused.block.bn, nn.Identity)
    assert fused.fc.weight is cnn.fc.weight  # shares everything else
    x = data["train"][0]
    with torch.no_grad():
        torch.testing.assert_close(fused(x), cnn(x), rtol=0, atol=1e-5)
    d = random_directions(cnn, seed=2, bias_bn="filter")  # BN gamma/beta move too
    a = evaluate_grid(cnn, d, data, XS, YS, fuse_bn=True)
    b = evaluate_grid(cnn, d, data, XS, YS, fuse_bn=False)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5)


def test_engine_options_agree(cnn, data):
    d = random_directions(cnn, seed=1)
    base = evaluate_grid(cnn, d, data, "-1:1:3", "-1:1:3", fuse_bn=False)
    for opts in (
        {"channels_last": True},
        {"points_per_forward": 4},
        {"batch_size": 7},
        {"batch_size": "auto"},
    ):
        other = evaluate_grid(cnn, d, data, "-1:1:3", "-1:1:3", **opts)
        for k in base:
            np.testing.assert_allclose(other[k], base[k], rtol=0, atol=1e-5, err_msg=str(opts))


def test_forward_factory_called_per_point(cnn, data):
    d = random_directions(cnn, seed=1)
    seen = []

    def factory(model):
        seen.append(model.fc.weight.detach().clone())
        return lambda x: model(x)

    out = evaluate_grid(cnn, d, data, "-1:1:3", None if d.ndim == 1 else "0:0:1", forward_factory=factory)
    ref = evaluate_grid(cnn, d, data, "-1:1:3", "0:0:1")
    np.testing.assert_allclose(out["train_loss"], ref["train_loss"], atol=1e-5)
    assert len(seen) == 3 and not torch.equal(seen[0], seen[2])


def test_bn_recalibration(cnn, data):
    d = random_directions(cnn, seed=1)
    before = _state(cnn)
    with SurfaceEngine(cnn, d, {"train": data["train"]}, bn_recalibrate=True) as eng:
        got = eng.evaluate(0.5, -0.5)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    # independent: move, recompute BN statistics in one train-mode forward of the whole set (population
    # statistics: running_var there is the unbiased estimate, the engine's the population variance), evaluate
    import copy

    m = copy.deepcopy(cnn)
    counts = {}
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.add_(0.5 * d.x[n] - 0.5 * d.y[n])
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
                mod.register_forward_pre_hook(lambda b, a: counts.__setitem__(b, a[0].numel() // a[0].shape[1]))
        m.train()
        m(data["train"][0])
        m.eval()
        for mod, count in counts.items():
            mod.running_var.mul_((count - 1) / count)
        loss = nn.functional.cross_entropy(m(data["train"][0]), data["train"][1]).item()
    assert abs(got["train_loss"] - loss) < 1e-5


def test_binary_model_is_piecewise_constant(binary_net, data):
    d = random_directions(binary_net, seed=0)
    only_binary = Directions({n: t * ("bconv" in n) for n, t in d.x.items()}, None, "random", d.info)
    out = evaluate_grid(binary_net, only_binary, data, "0:1e-6:5")
    assert np.ptp(out["train_loss"]) == 0  # sign(w + tiny) == sign(w): a flat step of the staircase
    wide = evaluate_grid(binary_net, only_binary, data, "-1:1:9")
    assert np.ptp(wide["train_loss"]) > 0
    x = parse_grid("-1:1:9")
    loss, _ = reference_loss(binary_net, only_binary, x[2], 0, data["train"])
    assert abs(wide["train_loss"][2] - loss) <= 1e-5


def test_compute_surface_resume_and_refuse(cnn, data, tmp_path):
    d = random_directions(cnn, seed=0)
    path = tmp_path / "surf.h5"
    full = evaluate_grid(cnn, d, data, XS, YS)
    calls = []

    def counting(model):
        calls.append(1)
        return model

    meta = {"model": {"name": "tiny"}, "checkpoint_sha256": "abc"}
    compute_surface(path, cnn, d, data, XS, YS, metadata=meta, progress=False)
    s = read_surface(path)
    assert s.complete and s.settings["model"] == {"name": "tiny"}
    for k in full:
        np.testing.assert_allclose(s.values[k], full[k], atol=1e-6)
    assert set(s.settings) >= {
        "seed",
        "normalization",
        "ignore",
        "subset_size",
        "data_sha256",
        "checkpoint_sha256",
    }
    # simulate lost points: clear some done flags, rerun fills only those
    import h5py

    with h5py.File(path, "r+") as f:  # on disk [j, i]: column 1 is x index 1 (5 y points)
        f["done"][:, 1] = 0
        f["train_loss"][:, 1] = np.nan
    compute_surface(path, cnn, d, data, XS, YS, metadata=meta, progress=False, forward_factory=counting)
    assert len(calls) == 5
    np.testing.assert_allclose(read_surface(path).values["train_loss"], full["train_loss"], atol=1e-6)
    with pytest.raises(SettingsMismatchError, match="directions_sha256"):
        compute_surface(
            path, cnn, random_directions(cnn, seed=9), data, XS, YS, metadata=meta, progress=False
        )
    with pytest.raises(SettingsMismatchError, match="data_sha256"):
        compute_surface(
            path,
            cnn,
            d,
            {"train": data["train"], "test": data["train"]},
            XS,
            YS,
            metadata=meta,
            progress=False,
        )
    new = compute_surface(
        path, cnn, random_directions(cnn, seed=9), data, XS, YS, metadata=meta, mode="new", progress=False
    )
    assert new.name == "surf-1.h5" and read_surface(new).complete


def test_one_dimensional_surface(cnn, data, tmp_path):
    d = random_directions(cnn, ndim=1, seed=0)
    path = compute_surface(tmp_path / "line.h5", cnn, d, {"train": data["train"]}, "-1:1:7", progress=False)
    s = read_surface(path)
    assert s.ndim == 1 and s.complete and np.isnan(s.values["test_loss"]).all()
    with pytest.raises(ValueError, match="no y direction"):
        evaluate_grid(cnn, d, data, "0:1:2", "0:1:2")
    with pytest.raises(ValueError, match="need y coordinates"):
        evaluate_grid(cnn, random_directions(cnn), data, "0:1:2")


def test_float64_model(data):
    model = make_model("cnn").double()
    d = random_directions(model, seed=0)
    dd = {k: (x.double(), y) for k, (x, y) in data.items()}
    out = evaluate_grid(model, d, dd, "-1:1:3", "0:1:2")
    loss, _ = reference_loss(model, d, 1.0, 1.0, dd["train"])
    assert abs(out["train_loss"][2, 1] - loss) < 1e-9
