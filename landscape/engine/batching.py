"""The engine's evaluation batch size: a deterministic rule (no timing), documented here.

``batch_size="auto"`` (the default) resolves as follows, from the model's shapes only, so that
the same job always runs with the same batch (reruns reproduce each other bit for bit):

1. ``exact=True``: 128, the batch of Li et al.'s tool (the surface then equals its loop's).
2. A forward provider's factory with a ``batch_size(sample_shape)`` method (the packed XNOR
   engine of ``bnext.packed``): its choice. The packed engine is memory-bound, so it keeps a
   batch's largest activation within a cache-sized budget.
3. Otherwise (a float torch forward): 128 on CPU (a batch's activations stay in the caches: measured
   against 512 on the CIFAR ResNet-20 and resnet18 of ``benchmarks/landscape_speed.py``), 1024 on CUDA.

In every case the batch is capped by the number of samples of the largest split, and in 1 and 3
by :data:`MAX_ACTIVATION_BYTES` for the largest activation of one batch (measured by one forward
of two samples with hooks, see :func:`peak_activation_bytes`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

#: batch size of Li et al.'s reference tool (and of ``exact=True``)
REFERENCE_BATCH = 128
#: default batch of the float torch forward, per device type
FLOAT_BATCH = {"cpu": 128, "cuda": 1024}
#: cap on the largest single activation tensor of one batch (bytes)
MAX_ACTIVATION_BYTES = 1 << 30


@torch.inference_mode()
def peak_activation_bytes(forward: Callable[[Tensor], Tensor], model: nn.Module, sample: Tensor) -> int:
    """Bytes per sample of the largest tensor any leaf module of ``model`` outputs, measured on the first
    two rows of ``sample`` (not one: a model need not take a batch of 1)."""
    sample = sample[:2]
    rows = max(1, sample.shape[0])
    peak = [sample[:1].numel() * sample.element_size()]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, Tensor):
            peak[0] = max(peak[0], -(-out.numel() * out.element_size() // rows))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        forward(sample)
    finally:
        for h in handles:
            h.remove()
    return peak[0]


def power_of_two_at_most(n: int) -> int:
    """The largest power of two <= ``n`` (n >= 1)."""
    return 1 << (max(1, int(n)).bit_length() - 1)


def resolve_batch_size(*, samples: int, device_type: str, exact: bool, preferred: int | None,
                       peak_bytes: int) -> int:
    """Apply the rule of the module docstring."""
    if exact:
        batch = REFERENCE_BATCH
    elif preferred is not None:
        batch = int(preferred)
    else:
        batch = FLOAT_BATCH.get(device_type, FLOAT_BATCH["cpu"])
    batch = min(batch, power_of_two_at_most(MAX_ACTIVATION_BYTES // max(1, peak_bytes)))
    return max(1, min(batch, samples))
