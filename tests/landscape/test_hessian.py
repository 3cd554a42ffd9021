"""Hessian operator, Lanczos eigenvalues, Hutchinson trace and SLQ density against dense Hessians."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature.hessian import Hessian, plot_density, select_parameters, shifted


class TinyConvBN(nn.Module):
    """A conv net with BatchNorm (eval mode), < 2,000 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.bn1(self.conv1(x)))
        x = torch.nn.functional.softplus(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _mlp() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 4)).double()
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(50, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (50,), generator=g))


def _conv() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(3)
    model = TinyConvBN().double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(20, 2, 6, 6, generator=g, dtype=torch.float64)
    return model.eval(), (x, torch.randint(0, 3, (20,), generator=g))


def dense_hessian(model: nn.Module, data, names: list[str] | None = None) -> torch.Tensor:
    """The reference: torch.autograd.functional.hessian of the mean cross-entropy (eval mode)."""
    model.eval()
    params = dict(model.named_parameters())
    names = names or list(params)
    fixed = {n: p.detach() for n, p in params.items() if n not in names}

    def loss(*flat: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**fixed, **dict(zip(names, flat))}, (data[0],))
        return nn.functional.cross_entropy(out, data[1])

    blocks = torch.autograd.functional.hessian(loss, tuple(params[n].detach() for n in names))
    sizes = [params[n].numel() for n in names]
    rows = [torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(names))], 1)
            for i in range(len(names))]
    return torch.cat(rows, 0)


@pytest.mark.parametrize("make", [_mlp, _conv], ids=["mlp", "conv_bn"])
def test_top_eigenvalues_trace_and_density_match_the_dense_hessian(make):
    model, data = make()
    h = Hessian(model, data, batch_size=16)  # several batches: products are summed over them
    assert h.dim < 2000
    dense = dense_hessian(model, data)
    exact = torch.linalg.eigvalsh(dense).flip(0)

    v = torch.randn(h.dim, dtype=torch.float64)
    torch.testing.assert_close(h.hvp(v), dense @ v, rtol=1e-9, atol=1e-11)

    top = h.top_eigenvalues(5, tol=1e-10)
    assert top.converged and top.iterations < h.dim
    np.testing.assert_allclose(top.values, exact[:5].numpy(), rtol=1e-4)
    bottom = h.top_eigenvalues(2, which="smallest", tol=1e-10)
    np.testing.assert_allclose(bottom.values, exact.flip(0)[:2].numpy(), rtol=1e-4, atol=1e-8 * float(exact[0]))

    tr = h.trace(probes=60, seed=5, target=None)  # a fixed number of probes
    assert tr.probes == 60 and tr.hvps == 60 and tr.stderr > 0
    assert abs(tr.estimate - float(dense.trace())) <= 3 * tr.stderr

    dens = h.density(iterations=40, runs=2, seed=6)
    t, p = dens.curve()
    assert np.trapezoid(p, t) == pytest.approx(1.0, abs=1e-4)
    assert (p >= 0).all()
    assert t[0] < float(exact[-1]) and t[-1] > float(exact[0])  # the grid covers the spectrum


def test_ritz_vectors_are_eigenvectors():
    model, data = _mlp()
    h = Hessian(model, data)
    r = h.top_eigenvalues(2, tol=1e-10, return_vectors=True)
    for value, vec in zip(r.values, r.vectors):
        torch.testing.assert_close(h.hvp(vec), value * vec, rtol=0, atol=1e-7 * abs(r.values[0]))


def test_parameter_selection_gives_the_sub_block_and_rejects_bad_selectors():
    model, data = _conv()
    real = [n for n, _ in model.named_parameters() if n.startswith(("bn", "fc"))]
    h = Hessian(model, data, params=lambda n, p: n in real)
    assert h.names == real
    dense = dense_hessian(model, data, real)
    torch.testing.assert_close(h.dense(), dense, rtol=1e-8, atol=1e-10)
    assert [n for n, _ in select_parameters(model, ["fc.weight"])] == ["fc.weight"]
    with pytest.raises(ValueError, match="predicate"):
        select_parameters(model, "real")
    with pytest.raises(KeyError, match="unknown parameter"):
        select_parameters(model, ["nope"])
    with pytest.raises(ValueError, match="empty"):
        select_parameters(model, lambda n, p: False)


def test_results_are_deterministic_and_the_model_is_left_as_it_was():
    model, data = _conv()
    model.train()
    model.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = Hessian(model, data).top_eigenvalues(1, max_iter=15, seed=3)
    b = Hessian(model, data).top_eigenvalues(1, max_iter=15, seed=3)
    assert a.values == b.values and a.iterations == b.iterations
    t1, t2 = Hessian(model, data).trace(5, seed=1), Hessian(model, data).trace(5, seed=1)
    assert t1.samples == t2.samples
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.bias.requires_grad and model.fc.weight.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_shifted_restores_bitwise_and_density_plot(tmp_path):
    model, data = _mlp()
    w0 = model[0].weight.detach().clone()
    with shifted(model, {"0.weight": torch.ones_like(w0)}, 0.5):
        assert torch.allclose(model[0].weight, w0 + 0.5)
    assert torch.equal(model[0].weight, w0)
    dens = Hessian(model, data).density(iterations=10)
    png = plot_density(dens, tmp_path / "d.png")
    assert png.stat().st_size > 1000


def test_cached_graph_gives_the_same_products_and_follows_weight_changes():
    model, data = _conv()
    cached = Hessian(model, data, batch_size=64)  # every part's graph is kept between products by default
    fresh = Hessian(model, data, batch_size=64, cache_graph=False)
    assert cached.cache_graph and not fresh.cache_graph
    v = torch.randn(cached.dim, dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(cached.hvp(v), fresh.hvp(v), rtol=1e-12, atol=1e-14)
    step = {n: 0.1 * torch.randn_like(p) for n, p in model.named_parameters()}
    with shifted(model, step):  # in-place change: the cached graph is rebuilt at the new weights
        torch.testing.assert_close(cached.hvp(v), fresh.hvp(v), rtol=1e-12, atol=1e-14)
        moved = fresh.hvp(v)
    assert not torch.allclose(moved, fresh.hvp(v))
    torch.testing.assert_close(cached.hvp(v), fresh.hvp(v), rtol=1e-12, atol=1e-14)
