"""Curvature per block (landscape.curvature.blocks): blocks by structure, exact diagonal blocks, traces that add up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature.blocks import block_curvature, find_blocks
from landscape.curvature.hessian import Hessian

from ._models import make_model


class Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc = nn.Linear(c, c)
        self.bn = nn.BatchNorm1d(c)

    def forward(self, x):
        return x + torch.tanh(self.bn(self.fc(x)))


class Tiny(nn.Module):
    """stem, a body of two residual blocks, head (the zoo's layout), plus a parameter on the root."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 5), nn.Tanh())
        self.blocks = nn.Sequential(Res(5), Res(5))
        self.head = nn.Linear(5, 3)
        self.scale = nn.Parameter(torch.tensor(1.3))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x))) * self.scale


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def _model():
    torch.manual_seed(0)
    m = Tiny().eval()
    with torch.no_grad():
        for b in m.blocks:
            b.bn.running_mean.uniform_(-0.3, 0.3)
            b.bn.running_var.uniform_(0.5, 1.5)
    return m


def test_blocks_follow_the_structure_and_partition_the_parameters():
    m = _model()
    blocks = find_blocks(m)
    assert list(blocks) == ["(root)", "stem", "blocks.0", "blocks.1", "head"]
    assert blocks["blocks.1"] == ["blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.bn.weight", "blocks.1.bn.bias"]
    flat = [n for ns in blocks.values() for n in ns]
    assert sorted(flat) == sorted(n for n, _ in m.named_parameters()) and len(flat) == len(set(flat))
    assert list(find_blocks(m, "children")) == ["(root)", "stem", "blocks", "head"]
    own = find_blocks(m, {"body": ["blocks"], "ends": ["stem", "head."]})
    assert list(own) == ["body", "ends", "other"] and own["other"] == ["scale"]
    with pytest.raises(ValueError, match="matches no parameter"):
        find_blocks(m, {"x": ["nope"]})
    # the landscape tests' CNN (stem Sequential of leaves, a block, a head)
    assert list(find_blocks(make_model("cnn"))) == ["stem", "block", "fc"]


def test_block_numbers_are_the_diagonal_blocks_of_the_dense_hessian():
    m, data = _model(), _data()
    dense = Hessian(m, data).dense().numpy()
    names = [n for n, _ in m.named_parameters()]
    sizes = dict((n, p.numel()) for n, p in m.named_parameters())
    offsets = np.cumsum([0] + [sizes[n] for n in names])
    where = {n: (offsets[i], offsets[i + 1]) for i, n in enumerate(names)}
    report = block_curvature(m, data, probes=120, tol=1e-8, seed=3)
    assert [r.block for r in report.rows] == list(find_blocks(m))
    for row in report.rows:
        idx = np.concatenate([np.arange(*where[n]) for n in report.blocks[row.block]])
        hb = dense[np.ix_(idx, idx)]
        hb = (hb + hb.T) / 2
        assert row.parameters == len(idx)
        assert row.top_eig == pytest.approx(np.linalg.eigvalsh(hb)[-1], rel=1e-5, abs=1e-8), row.block
        # Hutchinson within 4 standard errors of the exact block trace (probability of a false alarm ~1e-4)
        assert abs(row.trace - np.trace(hb)) <= 4 * row.trace_stderr + 1e-9, row.block
    total, se = report.trace_sum
    assert abs(total - np.trace(dense)) <= 4 * se + 1e-9  # the blocks partition the parameters


def test_selection_and_outputs(tmp_path):
    m, data = _model(), _data()
    report = block_curvature(m, data, params=lambda n, p: p.dim() > 1, probes=4, top_eig=False)
    assert [r.block for r in report.rows] == ["stem", "blocks.0", "blocks.1", "head"]  # scalar-only block dropped
    assert all(r.top_eig is None and r.trace is not None for r in report.rows)
    paths = report.write(tmp_path / "hessian_blocks", title="Hessian curvature per block: tiny")
    assert {p.suffix for p in paths.values()} == {".json", ".csv", ".png"}
    assert (tmp_path / "hessian_blocks.pdf").stat().st_size > 0
    back = json.loads(paths["json"].read_text())
    assert back["format"] == "landscape-hessian-blocks" and len(back["rows"]) == 4
    assert paths["csv"].read_text().splitlines()[0].startswith("block,depth,parameters")
    with pytest.raises(ValueError, match="probes"):
        block_curvature(m, data, probes=1)
