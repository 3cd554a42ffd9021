"""A non-finite Hessian-vector product stops Lanczos with an error that names it (not a SciPy message)."""

import pytest
import torch

from landscape.curvature.lanczos import top_eigenpairs


def test_non_finite_product_is_named():
    a = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    calls = []

    def matvec(v):
        calls.append(1)
        out = a @ v
        return out if len(calls) < 3 else out * float("inf")  # overflows at the third product

    with pytest.raises(ValueError, match="product 3 is not finite"):
        top_eigenpairs(matvec, lambda seed: torch.randn(20, dtype=torch.float64,
                                                        generator=torch.Generator().manual_seed(seed)), k=2)


def test_finite_products_still_converge():
    a = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    start = lambda seed: torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    res = top_eigenpairs(lambda v: a @ v, start, k=2)
    values = res[0] if isinstance(res, tuple) else res.values
    assert sorted(float(x) for x in values)[-2:] == pytest.approx([19.0, 20.0], rel=1e-8)
