"""Schedules as functions of training progress: the progressive-binarization temperature and the LR.

Progressive binarization (paper section 5.1, "progressive weight binarization"): a binary
layer uses ``clamp(w / tau, -1, 1)`` while ``tau`` is above :data:`bnext.nn.SIGN_THRESHOLD`
and ``sign(w)`` after.  The reference multiplies tau by 0.9 per epoch (pure sign after about
150 of 512 epochs); here tau is a function of progress ``p`` in [0, 1] so that any run length
ends fully binary:

    tau(p) = tau_start * (tau_end / tau_start) ** (p / end_fraction)   for p < end_fraction
    tau(p) = 0 (exactly sign)                                           for p >= end_fraction

a geometric (log-linear) decay like the reference's, from ``tau_start`` to ``tau_end`` just
before ``end_fraction``.  ``end_fraction = 0.3`` matches the reference's 150/512.
"""

from __future__ import annotations

import math

import torch

__all__ = ["build_lr_scheduler", "tau_at"]


def tau_at(progress: float, *, tau_start: float = 1.0, tau_end: float = 1e-5, end_fraction: float = 0.3,
           schedule: str = "progressive") -> float:
    """Binarization temperature at training progress ``progress`` in [0, 1] (see module docstring).

    ``schedule="sign"`` returns 0 (pure sign from the start).
    """
    if schedule == "sign":
        return 0.0
    if schedule != "progressive":
        raise ValueError(f"unknown binarization schedule {schedule!r}; expected 'progressive' or 'sign'")
    if not 0 < tau_end <= tau_start:
        raise ValueError(f"need 0 < tau_end <= tau_start, got {tau_end}, {tau_start}")
    p = min(max(float(progress), 0.0), 1.0)
    if end_fraction <= 0 or p >= end_fraction:
        return 0.0
    return float(tau_start * math.exp(math.log(tau_end / tau_start) * (p / end_fraction)))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int,
                       warmup_lr: float, min_lr: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from ``warmup_lr`` to the base LR, then cosine to ``min_lr`` (section 5.1).

    Steps are whatever the caller steps it by (epochs or optimizer steps). A ``SequentialLR`` of
    ``LinearLR`` + ``CosineAnnealingLR``; without warm-up just the cosine.
    """
    base = max(g["lr"] for g in optimizer.param_groups)
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1) if total_steps > 1 else 0
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(total_steps - warmup_steps, 1), eta_min=min_lr
    )
    if warmup_steps == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=min(warmup_lr / base, 1.0), end_factor=1.0, total_iters=warmup_steps
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup_steps])
