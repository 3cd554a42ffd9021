"""One epoch of training and one pass of evaluation (as DeiT's ``engine.py``).

A training step (paper section 5.1 and Algorithm 1): forward the student (fp32), compute the
loss (cross-entropy, soft-target cross-entropy under MixUp/CutMix, or the KD loss of a
:class:`bnext.kd.Distiller`, Eq. 4), backward, clip the global gradient norm (5), AdamW step,
clamp the latent binary weights to [-1.5, 1.5].
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn import clip_latent_weights_

__all__ = ["accuracy_counts", "cross_entropy", "evaluate", "train_one_epoch"]


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with hard (long) or soft (probability, e.g. MixUp/CutMix) targets."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def _hard(targets: Tensor) -> Tensor:
    return targets if targets.ndim == 1 else targets.argmax(dim=1)


def accuracy_counts(logits: Tensor, targets: Tensor) -> tuple[int, int]:
    """Number of top-1 and top-5 hits (top-k capped at the class count); soft targets use their argmax."""
    labels = _hard(targets)
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())


def _to(x: Tensor, device: torch.device | str, channels_last: bool) -> Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = cross_entropy,
    device: torch.device | str = "cpu",
    epoch: int = 0,
    scheduler: Any = None,
    clip_grad: float | None = 5.0,
    batch_transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    distiller: Any = None,
    step_callback: Callable[[int], None] | None = None,
    latent_clip: float | None = 1.5,
    micro_batches: int = 1,
    channels_last: bool = False,
    progress: bool = False,
    total: int | None = None,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``batches``.

    Args:
        batches: iterable of ``(images, labels)``; labels long ``[B]`` (or soft ``[B, C]``).
        scheduler: stepped after every optimizer step (per-step schedules); per-epoch schedulers
            are stepped by the caller.
        clip_grad: global gradient-norm clip (section 5.1: 5); ``None`` disables.
        batch_transform: ``(x, y) -> (x, soft_y)`` (MixUp/CutMix), applied on the device.
        distiller: a :class:`bnext.kd.Distiller`; its loss replaces ``loss_fn`` and its KD part is
            reported as ``kd_loss``. ``distiller.set_epoch(epoch)`` is called first (Algorithm 1).
        step_callback: called as ``step_callback(step)`` before each step (``step`` counts from 0
            within the epoch), e.g. to set a per-step binarization temperature.
        latent_clip: clamp latent binary weights to ``[-latent_clip, latent_clip]`` after each step.
        micro_batches: split each batch into this many chunks and accumulate gradients (equal to
            DDP over as many processes: BatchNorm sees each chunk separately).
        max_steps: stop after this many steps.

    Returns:
        ``loss`` (mean), ``top1``/``top5`` (percent, against the hard labels), ``count`` (samples),
        ``steps``, ``seconds``, and ``kd_loss`` when distilling.
    """
    model.train()
    if distiller is not None:
        distiller.set_epoch(epoch)
    is_ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    params = [p for p in model.parameters() if p.requires_grad]
    loss_sum = kd_sum = 0.0
    c1 = c5 = count = steps = 0
    t0 = time.perf_counter()
    bar = tqdm(batches, total=total, desc=f"train {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        if max_steps is not None and step >= max_steps:
            break
        if step_callback is not None:
            step_callback(step)
        x = _to(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        if batch_transform is not None:
            x, y = batch_transform(x, y)
        optimizer.zero_grad(set_to_none=True)
        n = x.shape[0]
        chunks = list(zip(x.chunk(micro_batches), y.chunk(micro_batches)))
        for i, (xc, yc) in enumerate(chunks):
            sync = nullcontext() if (not is_ddp or i == len(chunks) - 1) else model.no_sync()
            with sync:
                logits = model(xc)
                if distiller is not None:
                    loss, kd = distiller(xc, logits, yc)
                    kd_sum += float(kd.detach()) * xc.shape[0]
                else:
                    loss = loss_fn(logits, yc)
                (loss * (xc.shape[0] / n)).backward()
            loss_sum += float(loss.detach()) * xc.shape[0]
            h1, h5 = accuracy_counts(logits.detach(), yc)
            c1 += h1
            c5 += h5
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        optimizer.step()
        if latent_clip:
            clip_latent_weights_(model, latent_clip)
        if scheduler is not None:
            scheduler.step()
        count += n
        steps += 1
        if progress:
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", top1=f"{100.0 * c1 / count:.1f}")
    bar.close()
    out = {
        "loss": loss_sum / max(count, 1),
        "top1": 100.0 * c1 / max(count, 1),
        "top5": 100.0 * c5 / max(count, 1),
        "count": count,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
    }
    if distiller is not None:
        out["kd_loss"] = kd_sum / max(count, 1)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, device: torch.device | str = "cpu",
             channels_last: bool = False, progress: bool = False) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 (percent) of ``model`` in eval mode; also ``count``."""
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    c1 = c5 = count = 0
    for x, y in tqdm(batches, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        x = _to(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        h1, h5 = accuracy_counts(logits, y)
        c1 += h1
        c5 += h5
        count += x.shape[0]
    model.train(was_training)
    n = max(count, 1)
    return {"loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "count": count}
