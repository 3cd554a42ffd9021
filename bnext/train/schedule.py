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

``schedule="exponential"`` is the authors' rule itself: ``tau = tau_start * decay ** epoch`` with
``epoch = progress * epochs`` (``decay = 0.9`` per epoch), however long the run.
"""

from __future__ import annotations

import math

import torch

__all__ = ["build_lr_scheduler", "tau_at"]


def tau_at(progress: float, *, tau_start: float = 1.0, tau_end: float = 1e-5, end_fraction: float = 0.3,
           schedule: str = "progressive", decay: float = 0.9, epochs: float = 1.0) -> float:
    """Binarization temperature at training progress ``progress`` in [0, 1] (see module docstring).

    ``schedule="sign"`` returns 0 (pure sign from the start); ``"exponential"`` returns
    ``tau_start * decay ** (progress * epochs)`` (the authors' x0.9 per epoch).
    """
    if schedule == "sign":
        return 0.0
    if schedule == "exponential":
        if not 0 < decay < 1:
            raise ValueError(f"exponential binarization schedule needs 0 < decay < 1, got {decay}")
        return float(tau_start * decay ** (min(max(float(progress), 0.0), 1.0) * epochs))
    if schedule != "progressive":
        raise ValueError(f"unknown binarization schedule {schedule!r}; expected 'progressive', 'exponential' or "
                         "'sign'")
    if not 0 < tau_end <= tau_start:
        raise ValueError(f"need 0 < tau_end <= tau_start, got {tau_end}, {tau_start}")
    p = min(max(float(progress), 0.0), 1.0)
    if end_fraction <= 0 or p >= end_fraction:
        return 0.0
    return float(tau_start * math.exp(math.log(tau_end / tau_start) * (p / end_fraction)))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int,
                       warmup_lr: float, min_lr: float,
                       cosine_length: str = "remaining") -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from ``warmup_lr`` to the base LR, then cosine to ``min_lr`` (section 5.1).

    Steps are whatever the caller steps it by (epochs or optimizer steps). A ``SequentialLR`` of
    ``LinearLR`` + ``CosineAnnealingLR``; without warm-up just the cosine. ``cosine_length``:
    ``"remaining"`` (the cosine spans the steps after warm-up and ends at ``min_lr``) or ``"total"``
    (the authors' script: a cosine period of all ``total_steps`` starting after warm-up, so the run
    stops before reaching ``min_lr``).
    """
    if cosine_length not in ("remaining", "total"):
        raise ValueError(f"cosine_length must be 'remaining' or 'total', got {cosine_length!r}")
    base = max(g["lr"] for g in optimizer.param_groups)
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1) if total_steps > 1 else 0
    t_max = total_steps if cosine_length == "total" else total_steps - warmup_steps
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t_max, 1), eta_min=min_lr)
    if warmup_steps == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=min(warmup_lr / base, 1.0), end_factor=1.0, total_iters=warmup_steps
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup_steps])
