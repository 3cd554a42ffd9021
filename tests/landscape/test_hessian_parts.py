"""Products over parts of the data on single-threaded workers (landscape.curvature.products)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.curvature.hessian import Hessian
from landscape.curvature.lanczos import basis_bytes
from landscape.curvature.products import make_parts

from .test_hessian import _conv, dense_hessian


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the calling thread computes like a (single-threaded) worker
    yield
    torch.set_num_threads(before)


def _float_conv() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model, (x, y) = _conv()
    return model.float(), (x.float(), y)


def test_parts_cover_the_data_and_do_not_depend_on_workers():
    parts = make_parts(100, 64, 32)
    assert [(p.start, p.stop) for p in parts] == [(0, 32), (32, 64), (64, 82), (82, 100)]
    assert sum(p.weight for p in parts) == pytest.approx(1.0)
    assert [(p.start, p.stop) for p in make_parts(20, 256, 32)] == [(0, 20)]
    with pytest.raises(ValueError):
        make_parts(10, 4, 0)


def test_parts_give_the_dense_hessian_float64():
    model, data = _conv()
    dense = dense_hessian(model, data)
    h = Hessian(model, data, part_size=3, workers=2)  # 7 parts of 2-3 samples
    assert len(h.parts) == 7
    v = torch.randn(h.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(h.hvp(v), dense @ v, rtol=1e-10, atol=1e-12)


def test_parallel_product_equals_one_part_and_is_identical_for_one_and_two_workers(one_thread):
    model, data = _float_conv()
    whole = Hessian(model, data, part_size=64)  # one part
    v = torch.randn(whole.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = whole.hvp(v)
    serial = Hessian(model, data, part_size=4, workers=1).hvp(v)
    parallel = Hessian(model, data, part_size=4, workers=2)
    assert len(parallel.parts) == 5
    out = parallel.hvp(v)
    assert torch.equal(out, serial)  # same parts, same order: bit-identical whoever computed them
    assert torch.equal(parallel.hvp(v), out)  # kept graphs give the same product again
    assert float((out - ref).norm() / ref.norm()) < 1e-5  # float32 rounding of another summation order


def test_graph_budget_keeps_what_fits_and_rebuilds_the_rest():
    model, data = _conv()
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    full = Hessian(model, data, part_size=5, workers=2)
    ref = full.hvp(v)
    assert full.kept_parts == 4 and len(full.products.part_bytes) == 4 and min(full.products.part_bytes) > 0
    one = full.products.part_bytes[0]
    some = Hessian(model, data, part_size=5, workers=2, max_graph_bytes=3 * one + one // 2)
    none = Hessian(model, data, part_size=5, workers=2, max_graph_bytes=0)
    torch.testing.assert_close(some.hvp(v), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(none.hvp(v), ref, rtol=1e-12, atol=1e-14)
    # 4 parts do not fit in 3.5: room for the one part rebuilt at a time leaves 2.5, so 2 parts are kept
    assert some.kept_parts == 2 and none.kept_parts == 0
    assert some.products.graph_bytes <= 3 * one + one // 2
    # rebuilt parts run one at a time on a single-threaded worker: the same bits as with one worker
    alone = Hessian(model, data, part_size=5, workers=1, max_graph_bytes=3 * one + one // 2)
    assert torch.equal(alone.hvp(v), some.hvp(v))


def test_workers_raise_the_error_of_a_part():
    model, data = _conv()

    def loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] == 4:  # the last part (samples 16:20)
            raise RuntimeError("part failed")
        return nn.functional.cross_entropy(out, t)

    h = Hessian(model, data, loss_fn=loss, batch_size=8, part_size=8, workers=2, cache_graph=False)
    assert [p.stop - p.start for p in h.parts] == [8, 8, 4]
    with pytest.raises(RuntimeError, match="part failed"):
        h.hvp(torch.ones(h.dim, dtype=torch.float64))


@pytest.mark.slow
def test_full_resnet18_top5_memory_plan_fits_8_gib():
    """The pieces of a full ResNet-18 top-5 run on 256 samples (the CLI's defaults) stay under 8 GiB: the
    float32 basis of 50 vectors, the kept graphs (measured on one part and scaled) and the Ritz vectors."""
    bnext_models = pytest.importorskip("bnext.models")
    model = bnext_models.create("resnet18", num_classes=10, input_size=32)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    h = Hessian(model, (x, y))
    assert h.dim > 11_000_000 and len(h.parts) == 32 // h.part_size  # the automatic part size (16 here)
    h.hvp(torch.randn(h.dim))
    graphs = (256 // h.part_size) * h.products.part_bytes[0]  # 256 samples in parts of that size
    basis = basis_bytes(h.dim, 50, h.basis_dtype)
    vectors = 5 * h.dim * (4 + 4 + 8)  # the answer, its deflation copy and one start's float64 Ritz vectors
    assert basis <= h.max_basis_bytes
    assert min(graphs, h.products.max_graph_bytes) + basis + vectors < 7 * 2**30


def test_a_basis_above_the_limit_goes_to_disk_only_where_it_fits(tmp_path, monkeypatch):
    from collections import namedtuple

    from landscape.curvature import lanczos

    assert lanczos.check_basis(1000, 10, torch.float32, 1000, tmp_path) == 40_000  # on disk: enough free space
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(lanczos.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(lanczos.BasisTooLargeError, match="100 B free in"):
        lanczos.check_basis(1000, 10, torch.float32, 1000, tmp_path)
    with pytest.raises(lanczos.BasisTooLargeError, match="keep it on disk"):
        lanczos.check_basis(1000, 10, torch.float32, 1000, None)


def test_auto_part_size_follows_the_graph_per_sample():
    from landscape.curvature.products import PART_GRAPH_BYTES, auto_part_size

    assert auto_part_size(1.0) == 32
    assert auto_part_size(PART_GRAPH_BYTES / 20) == 16  # 32 samples would not fit, 16 do
    assert auto_part_size(PART_GRAPH_BYTES * 3.0) == 1
    model, data = _conv()
    h = Hessian(model, data)  # a small conv net: 32 (capped by nothing else)
    assert h.part_size == 32
    wide = Hessian(model, data, part_size="auto")
    assert wide.part_size == h.part_size  # a function of the model and input shape only
    with pytest.raises(ValueError, match="part_size"):
        Hessian(model, data, part_size=0)
