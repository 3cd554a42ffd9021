"""Curvature you can rely on: true residuals, repeated eigenvalues, converged extremes, bounded memory,
eigenvalue maps of the surface's own function, and epsilon-sharpness against an independent optimizer."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from landscape.curvature.eigmap import compute_eig_map, plot_eig_ratio, read_eig_map
from landscape.curvature.hessian import Hessian
from landscape.curvature.lanczos import BasisTooLargeError, clusters, lanczos, top_eigenpairs
from landscape.curvature.sharpness import epsilon_sharpness
from landscape.directions import random_directions
from landscape.store import SettingsMismatchError
from landscape.surface import compute_surface

from ._models import make_data, make_model


class Quadratic(nn.Module):
    """The loss ``0.5 w^T A w`` of one parameter vector: its Hessian is ``A`` exactly."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w[None].expand(x.shape[0], -1)


def quadratic(eigenvalues: torch.Tensor, seed: int = 100):
    """A model, data and loss whose Hessian has the given spectrum (random eigenvectors)."""
    dim = eigenvalues.numel()
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    a = q @ torch.diag(eigenvalues.double()) @ q.T

    def loss(out: torch.Tensor, _t: torch.Tensor) -> torch.Tensor:
        return 0.5 * (out[0] @ a.to(out.dtype) @ out[0])

    return Quadratic(dim), (torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)), loss


class TwoHeads(nn.Module):
    """Two identical heads, each with its own loss: every eigenvalue of the Hessian is (at least) double."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).to(dtype)
        self.b = copy.deepcopy(self.a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


def two_head_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ce = nn.functional.cross_entropy
    return ce(out[:, :3], y) + ce(out[:, 3:], y)


def _mlp(dtype: torch.dtype):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(40, 8, generator=g, dtype=dtype), torch.randint(0, 4, (40,), generator=g))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_reported_residuals_are_the_true_residuals_and_bound_the_error(dtype):
    model, data = _mlp(dtype)
    h = Hessian(model, data)
    dense = h.dense()
    exact = torch.linalg.eigvalsh(dense).flip(0).numpy()
    r = h.top_eigenvalues(3, return_vectors=True)
    assert r.converged and r.hvps == r.iterations + 3 * r.starts and r.starts >= 2
    assert r.basis_bytes == h.dim * (50 if h.dim > 50 else h.dim) * (8 if dtype == torch.float64 else 4)
    for value, res, bound, u in zip(r.values, r.residuals, r.error_bounds, r.vectors):
        u = u / u.norm()
        # the residual of the reported pair, recomputed with the dense matrix
        assert res == pytest.approx(float((dense @ u - value * u).norm()), rel=0.05, abs=1e-6 * r.scale)
        assert bound <= res
        nearest = float(np.abs(exact - value).min())
        assert nearest <= res + 1e-12  # some eigenvalue lies within the residual (Bauer-Fike, symmetric)
    np.testing.assert_allclose(r.values, exact[:3], rtol=1e-10 if dtype == torch.float64 else 1e-4)
    assert max(r.residuals) <= r.tol * r.scale
    assert r.agreement <= r.tol and r.remaining is not None and r.remaining <= r.values[-1] + max(r.residuals)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_repeated_eigenvalues_are_reported_as_a_cluster_not_skipped(dtype):
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(40, 6, generator=g, dtype=dtype), torch.randint(0, 3, (40,), generator=g))
    h = Hessian(TwoHeads(dtype), data, loss_fn=two_head_loss)
    exact = torch.linalg.eigvalsh(h.dense()).flip(0).numpy()
    assert exact[0] == pytest.approx(exact[1], rel=1e-5)  # a double eigenvalue
    r = h.top_eigenvalues(3, tol=1e-6 if dtype == torch.float64 else 1e-4)
    np.testing.assert_allclose(r.values, exact[:3], rtol=1e-8 if dtype == torch.float64 else 1e-4)
    assert [0, 1] in r.clusters and r.converged
    if dtype == torch.float64:  # one exact Krylov space sees one vector per eigenspace: a single start skips it
        single = h.top_eigenvalues(3, starts=1)
        assert single.values[1] < exact[1] - 1e-3 and single.clusters == []
        assert r.agreement > 1e-3  # the second start changed the first one's answer, and says so


@pytest.mark.parametrize("seed", range(5))
def test_converged_extremes_find_the_negative_eigenvalue_at_every_seed(seed):
    # one eigenvalue -0.05, the rest spread log-uniformly over [0.01, 100]: a fixed 20-product run loses the sign
    g = torch.Generator().manual_seed(7)
    bulk = torch.exp(torch.empty(299, dtype=torch.float64).uniform_(np.log(0.01), np.log(100), generator=g))
    spectrum = torch.cat([torch.tensor([-0.05], dtype=torch.float64), bulk])
    model, data, loss = quadratic(spectrum)
    h = Hessian(model, data, loss_fn=loss)
    e = h.extremes(tol=1e-4, seed=seed)
    assert e.min_converged and e.max_converged
    assert abs(e.min - (-0.05)) <= e.min_bound + 1e-12 and e.min < -e.min_bound < 0  # the sign is certain
    assert abs(e.max - float(bulk.max())) <= e.max_residual
    _, old_min = h.extreme_eigenvalues(20, seed=seed)
    assert old_min > 0  # what the fixed run reported (the case the issue describes)


def test_an_unconverged_run_says_so():
    spectrum = torch.cat([torch.tensor([-0.05]), torch.linspace(0.01, 100, 299)]).double()
    model, data, loss = quadratic(spectrum)
    h = Hessian(model, data, loss_fn=loss)
    e = h.extremes(tol=1e-8, max_iter=15)
    assert not e.min_converged and e.min_residual > 1e-8 * e.max
    r = h.top_eigenvalues(1, which="smallest", max_iter=20, tol=1e-8)
    assert not r.converged and r.residuals[0] > 1e-8 * r.scale


def test_the_basis_is_kept_in_the_parameters_dtype_and_refused_above_the_limit():
    model, data = _mlp(torch.float32)
    h = Hessian(model, data, max_basis_bytes=1000)
    assert h.basis_dtype == torch.float32
    with pytest.raises(BasisTooLargeError, match=r"basis would take .* above the limit .*--basis-dir.*--max-iter"):
        h.top_eigenvalues(1)
    assert h.hvp_count == 0  # refused before the first product
    assert "float32" in h.basis_estimate(50) and "limit 1000 B" in h.basis_estimate(50)
    ok = Hessian(model, data, max_basis_bytes=None).extremes(max_iter=30)
    assert ok.iterations <= 30


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=6, max_size=30), st.integers(0, 3),
       st.sampled_from([torch.float64, torch.float32]))
def test_lanczos_with_a_basis_in_either_dtype_matches_the_dense_spectrum(values, seed, dtype):
    a = torch.diag(torch.tensor(values, dtype=torch.float64))
    dim = a.shape[0]
    v0 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta, _, _, _ = lanczos(lambda v: a @ v, v0, dim, basis_dtype=dtype)
    exact = np.sort(values)
    scale = max(1.0, np.abs(exact).max())
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    # the extremes of a full run are exact eigenvalues (the start may miss an eigenvector; not the extremes of
    # a diagonal operator with a dense random start)
    assert theta[-1] == pytest.approx(exact[-1], abs=tol * scale)
    assert theta[0] == pytest.approx(exact[0], abs=tol * scale)
    r = top_eigenpairs(lambda v: a @ v, lambda s: torch.randn(dim, generator=torch.Generator().manual_seed(s),
                                                              dtype=torch.float64), 2, seed=seed, tol=1e-9)
    np.testing.assert_allclose(r.values, exact[::-1][:2], atol=1e-7 * scale)


def test_clusters_chain_neighbours_within_their_bounds():
    assert clusters([3.0, 3.0 + 1e-9, 2.0, 1.0, 1.0], [1e-10] * 5, 3.0, 1e-6) == [[0, 1], [3, 4]]
    assert clusters([3.0, 2.9], [1e-3, 1e-3], 3.0, 1e-6) == []


# ----------------------------------------------------------------------------- eigenvalue maps
def _recalibrated_surface(tmp_path, model, data):
    dirs = random_directions(model, seed=2)
    return compute_surface(tmp_path / "bn.h5", model, dirs, data, "-0.6:0.6:3", "-0.4:0.4:2", progress=False,
                           bn="recalibrate")


def test_eigenvalue_map_takes_the_hessian_of_the_surface_function(tmp_path):
    model = make_model("cnn")
    data = {"train": make_data(24, seed=1)}
    path = _recalibrated_surface(tmp_path, model, data)
    compute_eig_map(path, model, data, tol=1e-5, seed=1, progress=False)
    m = read_eig_map(path)
    with h5py.File(path) as f:
        assert f["eig_done"].attrs["bn"] == "recalibrate" and f["eig_done"].attrs["eig_unconverged"] == 0
        surface_loss = f["train_loss"][()]
        on_disk = f["eig_loss"][()]
    # the same function as the surface (recalibrated statistics at every point), not the centre's statistics
    np.testing.assert_allclose(on_disk, surface_loss, rtol=1e-4)
    assert m["done"].all() and (m["converged"] == 3).all()
    assert (m["max_eig_residual"] <= 1e-5 * np.abs(m["max_eig"]) + 1e-12).all()
    # an independent recalibration + dense Hessian at one off-centre point
    i, j = 2, 0
    moved = copy.deepcopy(model)
    dirs = random_directions(model, seed=2)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            if n in dirs.x:
                p.add_(m["xcoordinates"][i] * dirs.x[n] + m["ycoordinates"][j] * dirs.y[n])
        for mod in moved.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
        # the population statistics of the whole calibration set (landscape.bn's convention): one train-mode
        # batch of all 24, its unbiased running variance scaled back by (n - 1) / n per layer
        counts = {}
        hooks = [mod.register_forward_hook(lambda mod, inp, out: counts.__setitem__(mod, inp[0].numel()
                                                                                   // inp[0].shape[1]))
                 for mod in moved.modules() if isinstance(mod, nn.BatchNorm2d)]
        moved.train()
        moved(data["train"][0])
        for h in hooks:
            h.remove()
        for mod, n in counts.items():
            mod.running_var.mul_((n - 1) / n)
    moved.eval()
    exact = torch.linalg.eigvalsh(Hessian(moved, data).dense())
    assert m["max_eig"][i, j] == pytest.approx(float(exact[-1]), rel=1e-3)
    assert m["min_eig"][i, j] == pytest.approx(float(exact[0]), abs=1e-3 * float(exact[-1]))
    # the map of the centre model's statistics would be another function: refused point by point
    with pytest.raises(SettingsMismatchError, match="model_sha256"):
        compute_eig_map(path, make_model("cnn", seed=5), data, tol=1e-5, seed=1, progress=False)
    with pytest.raises(ValueError, match="another function"):
        compute_eig_map(path, make_model("cnn", seed=5), data, tol=1e-5, seed=1, progress=False, overwrite=True)
    other = {"train": make_data(24, seed=9)}
    with pytest.raises(ValueError, match="calibration set"):
        compute_eig_map(path, model, other, tol=1e-5, seed=1, progress=False, overwrite=True)


def test_unconverged_points_are_flagged_counted_and_hatched(tmp_path):
    model = make_model("cnn")
    data = {"train": make_data(16, seed=1)}
    dirs = random_directions(model, seed=3)
    path = compute_surface(tmp_path / "u.h5", model, dirs, data, "-0.5:0.5:3", "-0.5:0.5:3", progress=False)
    compute_eig_map(path, model, data, tol=1e-12, max_iter=4, seed=2, progress=False, max_points=5)
    m = read_eig_map(path)
    failed = m["done"] & (m["converged"] != 3)
    assert failed.sum() == 5 and np.isfinite(m["min_eig_residual"][m["done"]]).all()
    with h5py.File(path) as f:
        assert f["eig_done"].attrs["eig_unconverged"] == 5
    png = plot_eig_ratio(path, formats=["png", "pdf"])
    assert png.stat().st_size > 1000 and png.with_suffix(".pdf").is_file()


# ----------------------------------------------------------------------------- sharpness
def test_epsilon_sharpness_agrees_with_an_independent_constrained_optimizer():
    """Keskar's maximum over the filter-normalized ball, found by SLSQP (scipy) on a functional model,
    against the library's projected-gradient ascent: the ascent is a lower bound close to it."""
    from scipy.optimize import minimize

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    g = torch.Generator().manual_seed(5)
    data = (torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g))
    eps = 0.05
    names = [n for n, p in model.named_parameters()]
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    shapes = {n: base[n].shape for n in names}
    sizes = [base[n].numel() for n in names]

    def unflat(z: np.ndarray) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        for n, k in zip(names, sizes):
            out[n] = torch.from_numpy(z[off : off + k]).view(shapes[n])
            off += k
        return out

    def neg_loss(z: np.ndarray) -> tuple[float, np.ndarray]:
        delta = {n: t.clone().requires_grad_(base[n].dim() > 1) for n, t in unflat(z).items()}
        params = {n: base[n] + (delta[n] if base[n].dim() > 1 else 0) for n in names}
        loss = nn.functional.cross_entropy(functional_call(model, params, (data[0],)), data[1])
        moving = [delta[n] for n in names if base[n].dim() > 1]
        grads = dict(zip([n for n in names if base[n].dim() > 1], torch.autograd.grad(loss, moving)))
        flat = np.concatenate([(grads[n] if n in grads else torch.zeros(shapes[n], dtype=torch.float64))
                               .reshape(-1).numpy() for n in names])
        return -float(loss.detach()), -flat

    constraints, off = [], 0
    for n, k in zip(names, sizes):
        if base[n].dim() > 1:
            rows = base[n].shape[0]
            for r in range(rows):
                lo, width = off + r * (k // rows), k // rows
                limit = (eps * float(base[n][r].norm())) ** 2
                constraints.append({"type": "ineq",
                                    "fun": lambda z, lo=lo, w=width, c=limit: c - z[lo : lo + w] @ z[lo : lo + w]})
        off += k
    best = 0.0
    loss0 = -neg_loss(np.zeros(sum(sizes)))[0]
    for start in range(2):
        z0 = np.random.default_rng(start).normal(size=sum(sizes)) * 1e-3
        res = minimize(neg_loss, z0, jac=True, method="SLSQP", constraints=constraints,
                       options={"maxiter": 300, "ftol": 1e-12})
        feasible = all(c["fun"](res.x) >= -1e-9 for c in constraints)
        if feasible:
            best = max(best, -res.fun - loss0)
    assert best > 0
    ours = epsilon_sharpness(model, data, epsilon=eps, steps=30, step_size=0.2)
    assert ours.loss == pytest.approx(loss0, rel=1e-12)
    assert ours.increase <= best * (1 + 1e-6) + 1e-12  # the ascent stays inside the same ball
    print(f"SLSQP {best:.6g}, projected ascent {ours.increase:.6g}")
    assert ours.increase >= 0.99 * best  # and gets close to the constrained maximum


def test_a_basis_above_the_limit_goes_to_disk_with_the_same_result(tmp_path):
    model, data = _mlp(torch.float64)
    memory = Hessian(model, data).top_eigenvalues(3)
    h = Hessian(model, data, max_basis_bytes=1000, basis_dir=tmp_path)
    assert "on disk in" in h.basis_estimate(50)
    disk = h.top_eigenvalues(3)
    np.testing.assert_allclose(disk.values, memory.values, rtol=1e-12)
    np.testing.assert_allclose(disk.residuals, memory.residuals, rtol=1e-3, atol=1e-14)
    e_mem, e_disk = Hessian(model, data).extremes(), h.extremes()
    assert e_disk.max == pytest.approx(e_mem.max, rel=1e-12) and e_disk.min == pytest.approx(e_mem.min, rel=1e-9)
    assert list(tmp_path.iterdir()) == []  # unnamed temporary files: nothing left behind
