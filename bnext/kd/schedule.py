"""Knowledge boosting (paper section 4.2, Algorithm 1): which assistant teacher is active when.

The strong teacher is active at every epoch.  The assistants, sorted by increasing Knowledge
Complexity (Eq. 3), join one at a time and each is active for an equal share of the epochs:

    m(epoch) = min(floor(epoch / (epochs / n_assistants)), n_assistants - 1)

(0-based; the reference implementation's rule).  Algorithm 1 writes the switch as
``if i % (N / n) == 0: m += 1`` with ``m`` starting at 1, which read literally would switch
after epoch 0; the reference's floor rule is the intent (equal active time per assistant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["assistant_index", "order_by_kc"]

T = TypeVar("T")


def assistant_index(epoch: int, epochs: int, n_assistants: int) -> int:
    """0-based index of the assistant active at ``epoch`` (0-based) of ``epochs``; -1 without assistants."""
    if n_assistants <= 0:
        return -1
    if epochs <= 0:
        return 0
    # integer form of floor(epoch / (epochs / n)): exact at the switch epochs
    return min(max(epoch * n_assistants // epochs, 0), n_assistants - 1)


def order_by_kc(items: Sequence[T], kcs: Sequence[float]) -> list[T]:
    """``items`` sorted by increasing KC (stable)."""
    if len(items) != len(kcs):
        raise ValueError("need one KC per item")
    return [item for _, _, item in sorted(zip(kcs, range(len(items)), items))]
