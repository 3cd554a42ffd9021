"""Epsilon- and random-direction sharpness; resumable eigenvalue maps in surface files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from landscape.curvature.eigmap import compute_eig_map, eig_ratio, plot_eig_ratio, read_eig_map
from landscape.curvature.hessian import Hessian, shifted
from landscape.curvature.sharpness import epsilon_sharpness, random_sharpness
from landscape.directions import random_direction, random_directions
from landscape.store import SettingsMismatchError
from landscape.surface import compute_surface

from ._models import make_data, make_model


def _double(model):
    return model.double()


def _data64(n: int = 32):
    x, y = make_data(n, seed=3)
    return x.double(), y


def test_epsilon_sharpness_reaches_the_first_order_maximum_over_the_filter_ball():
    model, data = _double(make_model("cnn")), _data64()
    eps = 1e-4
    h = Hessian(model, data)
    g = h.gradient()
    # max of g.delta over per-filter balls ||delta_f|| <= eps ||theta_f|| (2-D+ weights; 1-D ignored)
    bound, off = 0.0, 0
    for _, p in h.selected:
        gp = g[off : off + p.numel()].view(p.shape)
        off += p.numel()
        if p.dim() > 1:
            w = p.detach().double()
            bound += float((w.reshape(w.shape[0], -1).norm(dim=1) * gp.reshape(gp.shape[0], -1).norm(dim=1)).sum())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = epsilon_sharpness(model, data, epsilon=eps, steps=8)
    assert r.increase == pytest.approx(eps * bound, rel=0.05)
    assert r.keskar == pytest.approx(100 * r.increase / (1 + r.loss))
    assert r.max_loss == max([r.loss, *r.losses])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    wider = epsilon_sharpness(model, data, epsilon=1e-2, steps=8)
    assert wider.increase > r.increase


def test_random_sharpness_matches_the_second_order_expansion_along_each_direction():
    model, data = _double(make_model("cnn")), _data64()
    radius = 1e-3
    r = random_sharpness(model, data, radius=radius, directions=6, seed=4)
    h = Hessian(model, data)
    g = h.gradient()
    gen = torch.Generator().manual_seed(4)
    expected = []
    for _ in range(6):
        d = random_direction(model, gen, normalization="filter", bias_bn="ignore")
        v = torch.cat([d[n].double().reshape(-1) for n in h.names])
        expected.append(radius * float(g @ v) + 0.5 * radius**2 * float(v @ h.hvp(v)))
    np.testing.assert_allclose(r.increases, expected, rtol=2e-2, atol=1e-9)
    assert r.ci_low < r.mean < r.ci_high and r.directions == 6
    half = r.ci_high - r.mean
    from scipy.stats import t

    assert half == pytest.approx(t.ppf(0.975, 5) * np.std(expected, ddof=1) / np.sqrt(6), rel=0.05)


def test_eigenvalue_map_resumes_after_interruption_and_keeps_the_orientation(tmp_path):
    model = make_model("cnn")
    data = {"train": make_data(24, seed=1)}
    dirs = random_directions(model, seed=2)
    xs, ys = "-0.5:0.5:3", "-0.4:0.4:4"  # non-square: catches a transposed layout
    a = compute_surface(tmp_path / "a.h5", model, dirs, data, xs, ys, progress=False)
    b = compute_surface(tmp_path / "b.h5", model, dirs, data, xs, ys, progress=False)
    kw = dict(tol=1e-5, seed=1, progress=False)
    compute_eig_map(a, model, data, max_points=5, **kw)  # "killed" after 5 of 12 points
    part = read_eig_map(a)
    assert part["done"].sum() == 5 and np.isnan(part["max_eig"][~part["done"]]).all()
    first = part["max_eig"].copy()
    calls = []
    orig = Hessian.extremes

    def counting(self, *args, **kwargs):
        calls.append(1)
        return orig(self, *args, **kwargs)

    try:
        Hessian.extremes = counting
        compute_eig_map(a, model, data, **kw)
    finally:
        Hessian.extremes = orig
    assert len(calls) == 7  # only the missing points
    compute_eig_map(b, model, data, **kw)  # uninterrupted
    ma, mb = read_eig_map(a), read_eig_map(b)
    assert ma["done"].all() and ma["max_eig"].shape == (3, 4)
    np.testing.assert_array_equal(ma["max_eig"], mb["max_eig"])
    np.testing.assert_array_equal(ma["min_eig"], mb["min_eig"])
    np.testing.assert_array_equal(ma["max_eig"][part["done"]], first[part["done"]])
    # [i, j] is the value at (x[i], y[j]): recompute one off-diagonal point directly
    i, j = 2, 1
    step = {n: ma["xcoordinates"][i] * dirs.x[n].double() + ma["ycoordinates"][j] * dirs.y[n].double()
            for n in dirs.x}
    with shifted(model, step):
        e = Hessian(model, data).extremes(tol=1e-5, seed=1)
    assert ma["max_eig"][i, j] == e.max and ma["min_eig"][i, j] == e.min
    assert ma["max_eig_residual"][i, j] == e.max_residual and ma["converged"][i, j] == 3
    assert (ma["max_eig"] > 0).all() and (ma["min_eig"] <= ma["max_eig"]).all()
    with h5py.File(a) as f:  # stored in the surface file with the losses' on-disk shape
        assert f["max_eig"].shape == f["train_loss"].shape == f["eig_done"].shape
        assert "straight-through" in f["eig_done"].attrs["surrogate"]
    with pytest.raises(SettingsMismatchError, match="max_iter"):
        compute_eig_map(a, model, data, max_iter=9, tol=1e-5, seed=1, progress=False)
    png = plot_eig_ratio(a)
    assert png.stat().st_size > 1000
    r = eig_ratio(ma["max_eig"], ma["min_eig"])
    assert np.isfinite(r).all() and (r >= 0).all()


def test_eigenvalue_map_on_a_square_grid_follows_the_store_orientation(tmp_path):
    from landscape.store import read_surface

    model = make_model("cnn")
    data = {"train": make_data(16, seed=1)}
    dirs = random_directions(model, seed=3)
    path = compute_surface(tmp_path / "sq.h5", model, dirs, data, "-0.5:0.5:3", "-0.5:0.5:3", progress=False)
    compute_eig_map(path, model, data, max_iter=6, seed=2, progress=False)
    m = read_eig_map(path)
    surface = read_surface(path)
    with h5py.File(path) as f:  # on disk like the losses (the store's version decides the layout)
        assert f["max_eig"].shape == f["train_loss"].shape and not np.isnan(f["max_eig"][()]).any()
        on_disk_t = f["max_eig"][()].T if int(f.attrs["format_version"]) >= 2 else f["max_eig"][()]
    np.testing.assert_array_equal(on_disk_t, m["max_eig"])
    i, j = 0, 2  # an off-diagonal point: a transposed map would hold the (2, 0) value here
    step = {n: surface.xcoordinates[i] * dirs.x[n].double() + surface.ycoordinates[j] * dirs.y[n].double()
            for n in dirs.x}
    with shifted(model, step):
        top = Hessian(model, data).extremes(max_iter=6, seed=2).max
    assert m["max_eig"][i, j] == top and m["max_eig"][j, i] != top
