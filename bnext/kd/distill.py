"""The distiller used by the training engine: diversified consecutive KD (paper Algorithm 1).

At every step the strong teacher and the current assistant (knowledge boosting,
:func:`bnext.kd.schedule.assistant_index`) predict the batch under AMP on CUDA (Algorithm 1's
``Q``; the student stays fp32) and the student is trained with the gap-sensitive ensemble of
Eq. 4.  With no assistant it is standard KD with the strong teacher alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import Tensor

from .losses import gap_sensitive_kd, soft_target_cross_entropy
from .schedule import assistant_index, order_by_kc
from .teachers import Teacher

__all__ = ["Distiller"]


class Distiller:
    """Callable ``(images, student_logits, targets) -> (loss, kd_loss)`` for ``train_one_epoch``.

    Args:
        strong: the strong teacher (always active).
        assistants: the assistant group; with ``order="kc"`` sorted by increasing KC (Eq. 3).
        epochs: total epochs, for the assistant schedule.
        temperature: KD temperature ``T`` (reference: 1).
        hard_weight: weight of a hard/soft-label cross-entropy added to the KD loss (reference: 0).
        ensemble: ``gap_sensitive`` (Eq. 4) or ``mean``.
        amp: run teachers under ``torch.autocast`` (float16) when the input is on CUDA.
    """

    def __init__(self, strong: Teacher, assistants: Sequence[Teacher] = (), *, epochs: int,
                 temperature: float = 1.0, hard_weight: float = 0.0, ensemble: str = "gap_sensitive",
                 order: str = "kc", amp: bool = True) -> None:
        assistants = list(assistants)
        if order == "kc" and len(assistants) > 1:
            unknown = [a.name for a in assistants if a.kc is None]
            if unknown:
                raise ValueError(f"cannot order assistants by KC: accuracy unknown for {unknown}; give "
                                 "'accuracy' (a fraction) in their config or set kd.order: given")
            assistants = order_by_kc(assistants, [a.kc for a in assistants])
        elif order not in ("kc", "given"):
            raise ValueError(f"unknown assistant order {order!r}; expected 'kc' or 'given'")
        self.strong = strong
        self.assistants = assistants
        self.epochs = epochs
        self.temperature = temperature
        self.hard_weight = hard_weight
        self.ensemble = ensemble
        self.amp = amp
        self.assistant = assistant_index(0, epochs, len(assistants))

    def set_epoch(self, epoch: int) -> None:
        """Select the assistant of ``epoch`` (Algorithm 1, knowledge boosting)."""
        self.assistant = assistant_index(epoch, self.epochs, len(self.assistants))

    def active(self) -> list[Teacher]:
        """The strong teacher and the current assistant (if any)."""
        return [self.strong] + ([self.assistants[self.assistant]] if self.assistants else [])

    @torch.no_grad()
    def teacher_logits(self, images: Tensor) -> list[Tensor]:
        """Logits of the active teachers (fp32), under AMP on CUDA."""
        ctx = torch.autocast("cuda", dtype=torch.float16) if (self.amp and images.is_cuda) else nullcontext()
        with ctx:
            return [t.model(images).float() for t in self.active()]

    def __call__(self, images: Tensor, student_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        kd = gap_sensitive_kd(student_logits, self.teacher_logits(images), self.temperature, ensemble=self.ensemble)
        loss = kd
        if self.hard_weight:
            loss = kd + self.hard_weight * soft_target_cross_entropy(student_logits, targets)
        return loss, kd
