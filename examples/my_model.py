"""A model and data set that are not in the workbench, for ``python -m landscape compute``.

Run from the repository root (the current folder is on ``sys.path``)::

    python -m landscape compute --model examples.my_model:build --data examples.my_model:loaders \\
        --x -1:1:11 --y -1:1:11 --splits train,test

``build(**options)`` returns a trained ``nn.Module`` (here: a small MLP trained for a second on the
data below; options come from ``--model-option KEY=VALUE``). ``loaders()`` returns
``{split: (inputs, targets)}`` (a ``DataLoader`` or one ``(inputs, targets)`` pair also work).
"""

from __future__ import annotations

import torch
from torch import nn


def _two_moons(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles with noise: 2-D inputs, labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * torch.pi
    label = torch.randint(0, 2, (n,), generator=g)
    x = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    x = torch.where(label[:, None] == 1, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], dim=1), x)
    return x + 0.1 * torch.randn(n, 2, generator=g), label


def loaders() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation data: 512 training and 256 test points."""
    return {"train": _two_moons(512, seed=0), "test": _two_moons(256, seed=1)}


def build(hidden: int = 32, steps: int = 300) -> nn.Module:
    """A small MLP with BatchNorm, trained with Adam on the training points (seeded by the caller)."""
    model = nn.Sequential(
        nn.Linear(2, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 2),
    )
    x, y = loaders()["train"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()
