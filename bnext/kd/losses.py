"""Distillation losses: standard KD, the gap-sensitive ensemble (paper Eq. 4), soft-target CE.

Notation: ``s`` student logits ``[B, C]``, ``t`` teacher logits, temperature ``T``;
``p = softmax(t / T)``, ``q = softmax(s / T)``.

* Standard KD (Hinton et al.): ``T^2 * mean_b KL(p || q)``, optionally ``+ w * CE(s, y)``.
* Gap-sensitive ensemble (Eq. 4): for each sample and teacher ``i``,
  ``CE_i = -sum_c q_c log p_i,c`` (the student-teacher cross-entropy), weights
  ``sigma_i = softmax_i(CE_i)`` (detached), loss ``T^2 * mean_b sum_i sigma_i KL(p_i || q)``.
  A teacher far from the student's prediction gets more weight ("more attention to the more
  complex knowledge"); with one teacher this is exactly standard KD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "gap_sensitive_kd",
    "gap_weights",
    "kd_loss",
    "per_sample_kl",
    "soft_target_cross_entropy",
]


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``mean_b -sum_c targets * log_softmax(logits)``; ``targets`` soft ``[B, C]`` (MixUp/CutMix) or long ``[B]``."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def per_sample_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` per sample, shape ``[B]`` (computed in fp32)."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
            targets: Tensor | None = None, hard_weight: float = 0.0) -> Tensor:
    """Standard KD: ``T^2 * mean KL(teacher || student)`` (+ ``hard_weight * CE(student, targets)``)."""
    loss = per_sample_kl(student_logits, teacher_logits, temperature).mean() * temperature**2
    if hard_weight and targets is not None:
        loss = loss + hard_weight * soft_target_cross_entropy(student_logits, targets)
    return loss


@torch.no_grad()
def gap_weights(student_logits: Tensor, teacher_logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Eq. 4's ``sigma``: per sample, softmax over teachers of ``CE_i = -sum q log p_i``; ``[B, n]``, rows sum to 1."""
    q = F.softmax(student_logits.float() / temperature, dim=-1)
    ces = torch.stack(
        [-(q * F.log_softmax(t.float() / temperature, dim=-1)).sum(dim=-1) for t in teacher_logits], dim=1
    )
    return F.softmax(ces, dim=1)


def gap_sensitive_kd(student_logits: Tensor, teacher_logits: Sequence[Tensor], temperature: float = 1.0,
                     targets: Tensor | None = None, hard_weight: float = 0.0,
                     ensemble: str = "gap_sensitive") -> Tensor:
    """Paper Eq. 4: ``T^2 * mean_b sum_i sigma_i KL_i`` with detached gap weights ``sigma``.

    ``ensemble="mean"`` uses equal weights ``1/n`` instead (a plain multi-teacher average).
    """
    if not teacher_logits:
        raise ValueError("gap_sensitive_kd needs at least one teacher")
    kls = torch.stack([per_sample_kl(student_logits, t, temperature) for t in teacher_logits], dim=1)  # [B, n]
    if ensemble == "gap_sensitive":
        w = gap_weights(student_logits, teacher_logits, temperature)
    elif ensemble == "mean":
        w = torch.full_like(kls, 1.0 / kls.shape[1])
    else:
        raise ValueError(f"unknown ensemble {ensemble!r}; expected 'gap_sensitive' or 'mean'")
    loss = (w * kls).sum(dim=1).mean() * temperature**2
    if hard_weight and targets is not None:
        loss = loss + hard_weight * soft_target_cross_entropy(student_logits, targets)
    return loss
