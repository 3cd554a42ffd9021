"""BatchNorm policies along lines and planes, non-finite values, PCA grids that fit."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from landscape.bn import check_interpolated_variance, resolve_bn_mode, seeded_subset, tensor_sha256
from landscape.directions import interpolation_direction, pca_directions, random_directions
from landscape.store import read_surface
from landscape.surface import compute_surface, evaluate_grid, fit_trajectory_grid

from ._models import make_model


def _pair():
    a, b = make_model("cnn", seed=0), make_model("cnn", seed=5)
    return a, b, interpolation_direction(a, b)


def test_defaults_by_direction_kind():
    assert resolve_bn_mode(None, "interpolate") == "recalibrate"
    assert resolve_bn_mode(None, "plane") == "recalibrate"
    assert resolve_bn_mode(None, "random") == resolve_bn_mode(None, "pca") == "interpolate"
    assert resolve_bn_mode(None, "random", bn_recalibrate=True) == "recalibrate"
    with pytest.raises(ValueError, match="contradicts"):
        resolve_bn_mode("interpolate", "random", bn_recalibrate=True)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_bn_mode("fixed", "random")


def test_interpolated_negative_variance_is_refused_with_the_valid_range(data, tmp_path):
    a, b, d = _pair()
    var_a = {n: t for n, t in a.named_buffers() if n.endswith("running_var")}
    # the valid range computed independently: var_a + x * (var_b - var_a) >= 0 for every entry
    lo = max(float((-var_a[n] / d.x[n])[d.x[n] > 0].max()) for n in var_a if (d.x[n] > 0).any())
    hi = min(float((-var_a[n] / d.x[n])[d.x[n] < 0].min()) for n in var_a if (d.x[n] < 0).any())
    assert lo < 0 < 1 < hi  # both end points are valid models
    inside = np.linspace(max(lo, -5.0) * 0.99, min(hi, 5.0) * 0.99, 5)
    check_interpolated_variance(a, d, inside, None)
    far = np.array([lo - 0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"turn negative at 1 of 3 grid points .*x=.*running_var") as err:
        check_interpolated_variance(a, d, far, None)
    assert f"{lo:.4g}" in str(err.value) and "recalibrate" in str(err.value)
    with pytest.raises(ValueError, match="turn negative"):
        compute_surface(tmp_path / "l.h5", a, d, {"train": data["train"]}, far, bn="interpolate", progress=False)
    assert not (tmp_path / "l.h5").exists()  # refused before any work
    # random directions never move the statistics: nothing to refuse
    check_interpolated_variance(a, random_directions(a, ndim=1), np.array([-100.0, 100.0]), None)


def test_recalibrate_is_the_default_for_interpolation_and_is_recorded(data, tmp_path):
    a, b, d = _pair()
    calib = seeded_subset(data["train"][0], 32, seed=4)
    assert torch.equal(calib, seeded_subset(data["train"][0], 32, seed=4)) and calib.shape[0] == 32
    path = compute_surface(
        tmp_path / "l.h5", a, d, {"train": data["train"]}, "-3:4:8", calibration=calib, calibration_seed=4,
        progress=False,
    )
    s = read_surface(path)
    assert s.settings["bn"] == "recalibrate" and s.complete and np.isfinite(s.values["train_loss"]).all()
    assert s.settings["bn_calibration"] == {"method": "population-float64", "size": 32, "seed": 4,
                                            "sha256": tensor_sha256(calib), "source": "calibration"}
    # independent check at x=-3: move the weights, recompute the statistics on the calibration set as one
    # train-mode batch (BN normalizes with the batch's biased variance; running_var holds the unbiased one)
    import copy

    m = copy.deepcopy(a)
    with torch.no_grad():
        for n, t in m.named_parameters():
            t.add_(-3 * d.x[n])
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
        counts = {}
        hooks = [mod.register_forward_pre_hook(lambda mod, a: counts.__setitem__(mod, a[0].numel() // a[0].shape[1]))
                 for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
        m.train()(calib)
        m.eval()
        for h in hooks:
            h.remove()
        for mod, count in counts.items():
            mod.running_var.mul_((count - 1) / count)
        loss = nn.functional.cross_entropy(m(data["train"][0]), data["train"][1]).item()
    assert abs(s.values["train_loss"][0] - loss) < 1e-5


def test_nonfinite_values_warn_with_the_point_and_are_counted(data, tmp_path):
    model = make_model("cnn")
    with torch.no_grad():
        model.fc.bias[0] = float("nan")  # NaN logits wherever the bias is not moved away
    d = random_directions(model, ndim=1, seed=0)
    with pytest.warns(RuntimeWarning, match=r"grid point \(1,\) \(x=0\): non-finite train_loss=nan"):
        path = compute_surface(tmp_path / "nan.h5", model, d, {"train": data["train"]}, "-1:1:3", progress=False)
    assert read_surface(path).attrs["nonfinite_points"] == 3
    with pytest.warns(RuntimeWarning, match="non-finite"):
        evaluate_grid(model, d, {"train": data["train"]}, "0:0:1")


def _pca(cnn, scale=10.0):
    g = torch.Generator().manual_seed(0)
    series = {}
    for n, p in cnn.named_parameters():
        u, v = torch.randn(p.shape, generator=g), torch.randn(p.shape, generator=g)
        steps = [p.detach() + scale * (0.2 * (5 - k) * u + 0.05 * np.cos(k) * v) for k in range(6)]
        series[n] = torch.stack(steps).numpy()
    return pca_directions(series, cnn)


def test_pca_grid_fits_the_trajectory(cnn, data, tmp_path):
    d = _pca(cnn)
    t = np.asarray(d.info["trajectory"])
    assert np.abs(t).max() > 5  # far outside the usual [-1, 1] grid
    xc, yc = fit_trajectory_grid(t, 7)
    for k, c in enumerate((xc, yc)):
        span = max(t[:, k].max(), 0) - min(t[:, k].min(), 0)
        assert c[0] < min(t[:, k].min(), 0) - 0.19 * span and c[-1] > max(t[:, k].max(), 0) + 0.19 * span
    assert np.isclose(np.ptp(xc), np.ptp(yc))  # square: the loss across the path at the same scale
    flat_x, flat_y = fit_trajectory_grid(t, 7, square=False)
    assert np.ptp(flat_y) < np.ptp(yc) and np.isclose(flat_x[0], xc[0]) and np.isclose(flat_x[-1], xc[-1])
    path = compute_surface(tmp_path / "p.h5", cnn, d, {"train": data["train"]}, "auto:4", "auto:3", progress=False)
    s = read_surface(path)
    assert s.shape == (4, 3)
    np.testing.assert_allclose(s.xcoordinates, fit_trajectory_grid(t, 4)[0])
    assert (s.trajectory[:, 0] >= s.xcoordinates.min()).all() and (s.trajectory[:, 1] <= s.ycoordinates.max()).all()
    assert s.direction_info["kind"] == "pca"
    ratio = s.direction_info["explained_variance_ratio"]
    assert isinstance(ratio, list) and len(ratio) == 2 and 0 < ratio[1] <= ratio[0] <= 1
    with pytest.warns(UserWarning, match="outside the grid"):
        compute_surface(tmp_path / "q.h5", cnn, d, {"train": data["train"]}, "-1:1:2", "-1:1:2", progress=False)
    with pytest.raises(ValueError, match="needs PCA"):
        compute_surface(tmp_path / "r.h5", cnn, random_directions(cnn), {"train": data["train"]}, "auto",
                        "auto", progress=False)


def test_coarse_to_fine_interruption_leaves_a_complete_coarse_grid(cnn, data, tmp_path):
    from landscape.grid import complete_level

    calls = []

    def stop_after_9(model):
        if len(calls) == 9:
            raise KeyboardInterrupt
        calls.append(1)
        return model

    d = random_directions(cnn, seed=0)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_surface(tmp_path / "c.h5", cnn, d, {"train": data["train"]}, "-1:1:5", "-1:1:5",
                        forward_factory=stop_after_9, progress=False)
    s = read_surface(tmp_path / "c.h5")
    assert s.done.sum() == 9 and complete_level(s.done) == 2  # the 3x3 grid of every other point
