"""The straight-through binarizers support double backward: Hessians of the STE surrogate."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from bnext.nn import ApproxSign, BinaryConv2d, SignSTE, is_binary_weight, sign
from landscape.curvature.hessian import Hessian


def test_sign_ste_second_derivative_is_the_analytic_one():
    x = torch.tensor([-2.0, -0.7, 0.2, 1.2, 1.7], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0.5, -1.0, 2.0, 1.5, 3.0], dtype=torch.float64)
    f = (a * SignSTE(1.5)(x)).sum() ** 2
    (g,) = torch.autograd.grad(f, x, create_graph=True)
    rows = [torch.autograd.grad(g[i], x, retain_graph=True)[0] for i in range(5)]
    hess = torch.stack(rows)
    m = (x.detach().abs() <= 1.5).double()
    torch.testing.assert_close(hess, 2 * torch.outer(a * m, a * m))


def test_approx_sign_double_backward_matches_finite_differences_of_its_backward():
    x = torch.tensor([-1.4, -0.6, -0.1, 0.3, 0.8, 1.1], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0], dtype=torch.float64)

    def grad_at(z: torch.Tensor, create: bool = False) -> torch.Tensor:
        return torch.autograd.grad((c * ApproxSign()(z)).sum(), z, create_graph=create)[0]

    g = grad_at(x, create=True)
    diag = torch.autograd.grad(g.sum(), x)[0]  # the Hessian is diagonal here
    expected = c * -2.0 * sign(x.detach()) * (x.detach().abs() < 1).double()
    torch.testing.assert_close(diag, expected)
    h = 1e-6  # no sign flips within h of these points: the STE gradient field is smooth there
    fd = (grad_at((x + h).detach().requires_grad_()) - grad_at((x - h).detach().requires_grad_())) / (2 * h)
    torch.testing.assert_close(diag, fd, rtol=1e-6, atol=1e-6)


class Linearized(nn.Module):
    """A binarizer replaced by its explicit straight-through Taylor model at the current point."""

    def __init__(self, binarizer: nn.Module):
        super().__init__()
        self.b = binarizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x.detach()
        d = x - x0  # zero in value, identity in derivative
        if isinstance(self.b, SignSTE):
            return sign(x0) + (x0.abs() <= self.b.clip).to(x.dtype) * d
        slope = (2.0 - 2.0 * x0.abs()).clamp(min=0.0)
        curvature = -2.0 * sign(x0) * (x0.abs() < 1).to(x.dtype)
        return sign(x0) + slope * d + 0.5 * curvature * d * d


class TinyBinary(nn.Module):
    def __init__(self, binarizer: str, scale: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(4)
        self.bconv = BinaryConv2d(4, 4, 3, act_binarizer=binarizer, shift=True, scale=scale)
        self.bn1 = nn.BatchNorm2d(4)
        self.act = nn.PReLU(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.stem(x))
        x = self.act(self.bn1(self.bconv(x))) + x
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("binarizer,scale", [("ste_sign", "none"), ("approx_sign", "mean_abs")])
def test_network_hessian_is_the_hessian_of_the_explicit_ste_surrogate(binarizer, scale):
    torch.manual_seed(0)
    model = TinyBinary(binarizer, scale).double().eval()
    with torch.no_grad():
        model.bconv.shift.normal_(0, 0.3)
        model.bconv.weight.normal_(0, 0.5)
        # non-trivial statistics: with the defaults, bn1 passes the binary conv's integer outputs on
        # unchanged and PReLU sits exactly on its kink at 0, where no Hessian exists
        for bn in (model.bn0, model.bn1):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(12, 1, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g))
    ours = Hessian(model, data, batch_size=6).dense()  # two batches, summed
    torch.testing.assert_close(ours, ours.T, rtol=1e-10, atol=1e-12)

    model.bconv.act_binarizer = Linearized(model.bconv.act_binarizer)  # plain autograd ops only
    params = dict(model.named_parameters())
    names = list(params)

    def loss(*flat: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, dict(zip(names, flat)), (data[0],)), data[1])

    blocks = torch.autograd.functional.hessian(loss, tuple(p.detach() for p in params.values()))
    sizes = [p.numel() for p in params.values()]
    ref = torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(names))], 1)
                     for i in range(len(names))])
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-10)
    assert ours.abs().max() > 0

    real = Hessian(model, data, params=lambda n, p: not is_binary_weight(model, n))
    keep = torch.tensor([not is_binary_weight(model, n) for n in names for _ in range(params[n].numel())])
    assert real.dim == int(keep.sum())
    v = torch.randn(real.dim, dtype=torch.float64)
    torch.testing.assert_close(real.hvp(v), ref[keep][:, keep] @ v, rtol=1e-8, atol=1e-10)
