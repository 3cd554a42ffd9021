"""AdamW with the paper's two weight-decay groups (section 5.1, reference recipe).

Group rule (by tensor rank, as in the reference implementation):

* ``wd_binary`` (1e-8): every **4-D** parameter - the latent weights of binary convolutions,
  the other conv kernels (stem, downsample, SE), and BNext's per-channel activation shifts and
  recoupling mix weights (stored as ``[1, C, 1, 1]``);
* ``wd_real`` (1e-3): everything else - BatchNorm and PReLU weights, biases and the classifier.

The paper states "1e-3 for non-binary and 1e-8 for binary parameters"; the reference puts all
conv kernels in the small-decay group, which we follow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "param_groups"]


def param_groups(model: nn.Module, wd_real: float = 1e-3, wd_binary: float = 1e-8) -> list[dict[str, Any]]:
    """Two AdamW parameter groups (see module docstring); each has ``name``, ``params``, ``weight_decay``."""
    binary, real = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (binary if p.ndim == 4 else real).append(p)
    groups = []
    if binary:
        groups.append({"name": "binary", "params": binary, "weight_decay": wd_binary})
    if real:
        groups.append({"name": "real", "params": real, "weight_decay": wd_real})
    return groups


def build_optimizer(model: nn.Module, *, lr: float = 1e-3, betas: tuple[float, float] = (0.99, 0.999),
                    eps: float = 1e-8, wd_real: float = 1e-3, wd_binary: float = 1e-8) -> torch.optim.AdamW:
    """AdamW(lr, betas=(0.99, 0.999)) over :func:`param_groups` (paper section 5.1)."""
    return torch.optim.AdamW(param_groups(model, wd_real, wd_binary), lr=lr, betas=tuple(betas), eps=eps)
