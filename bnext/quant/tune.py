"""Post-quantization fine-tuning (paper section 7.5).

AdamW with betas (0.99, 0.999), learning rate 1e-7, no weight decay, binary layers frozen
(``requires_grad=False`` on every :class:`~bnext.nn.BinaryConv2d` parameter), a configurable
number of epochs (the paper: 5 on ImageNet).  Everything else (quantized layers, BN, PReLU,
shifts) is trained; the quantizers' straight-through estimators carry the gradient.

The epoch loop is :mod:`bnext.train.engine` when it is installed (imported lazily), otherwise a
small built-in loop with the same signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BinaryConv2d

#: section 7.5 settings
FINETUNE_LR = 1e-7
FINETUNE_BETAS = (0.99, 0.999)
FINETUNE_EPOCHS = 5


def freeze_binary_layers(model: nn.Module) -> int:
    """``requires_grad=False`` on every BinaryConv2d parameter; returns how many tensors were frozen."""
    n = 0
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
                n += 1
    return n


def make_optimizer(model: nn.Module, lr: float = FINETUNE_LR) -> torch.optim.AdamW:
    """AdamW(betas=(0.99, 0.999), weight_decay=0) over the parameters that still require grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters left to fine-tune")
    return torch.optim.AdamW(params, lr=lr, betas=FINETUNE_BETAS, weight_decay=0.0)


def _engine() -> Any | None:
    try:
        from ..train import engine  # type: ignore[attr-defined]
    except ImportError:
        return None
    if not all(hasattr(engine, f) for f in ("train_one_epoch", "evaluate")):
        return None
    return engine


def _batches(source: Iterable | Callable[[], Iterable]) -> Iterable:
    return source() if callable(source) else source


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, *,
                    loss_fn: Callable = F.cross_entropy, device: torch.device | str = "cpu", epoch: int = 0,
                    clip_grad: float | None = 5.0) -> dict:
    """Built-in epoch (used when bnext.train is absent): mean loss and top-1 (%) of the training batches."""
    model.train()
    total = correct = 0
    loss_sum = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip_grad)
        optimizer.step()
        loss_sum += float(loss) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return {"epoch": epoch, "loss": loss_sum / max(total, 1), "top1": 100.0 * correct / max(total, 1)}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, device: torch.device | str = "cpu") -> dict:
    """Mean cross-entropy, top-1 and top-5 accuracy (%) in eval mode."""
    model.eval()
    total = top1 = top5 = 0
    loss_sum = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        top1 += int((top[:, 0] == y).sum())
        top5 += int((top == y[:, None]).any(dim=1).sum())
        total += len(y)
    if total == 0:
        raise ValueError("evaluate got no batches")
    return {"loss": loss_sum / total, "top1": 100.0 * top1 / total, "top5": 100.0 * top5 / total}


def run_evaluate(model: nn.Module, batches: Iterable, *, device: torch.device | str = "cpu") -> dict:
    """bnext.train.engine.evaluate when available, else :func:`evaluate`."""
    engine = _engine()
    fn = engine.evaluate if engine is not None else evaluate
    return fn(model, batches, device=device)


def finetune(model: nn.Module, train_batches: Iterable | Callable[[], Iterable],
             test_batches: Iterable | Callable[[], Iterable] | None = None, *, epochs: int = FINETUNE_EPOCHS,
             lr: float = FINETUNE_LR, device: torch.device | str = "cpu", loss_fn: Callable = F.cross_entropy,
             clip_grad: float | None = 5.0) -> list[dict]:
    """Fine-tune a quantized model in place (section 7.5 settings); returns one dict per epoch.

    ``train_batches``/``test_batches`` yield ``(images, labels)``; pass a re-iterable (list,
    DataLoader) or a zero-argument callable returning a fresh iterable per epoch.  Binary layers
    stay frozen afterwards.  Each dict has ``epoch``, ``train`` (loss, top1) and, with test
    batches, ``test`` (loss, top1, top5).
    """
    if epochs < 0 or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"finetune needs epochs >= 0 and lr > 0, got epochs={epochs}, lr={lr}")
    model.to(device)
    freeze_binary_layers(model)
    history: list[dict] = []
    if epochs == 0:
        return history
    optimizer = make_optimizer(model, lr)
    engine = _engine()
    for epoch in range(epochs):
        if engine is not None:
            train_stats = engine.train_one_epoch(model, _batches(train_batches), optimizer, loss_fn=loss_fn,
                                                 device=device, epoch=epoch, clip_grad=clip_grad)
        else:
            train_stats = train_one_epoch(model, _batches(train_batches), optimizer, loss_fn=loss_fn,
                                          device=device, epoch=epoch, clip_grad=clip_grad)
        record: dict = {"epoch": epoch, "train": train_stats}
        if test_batches is not None:
            record["test"] = run_evaluate(model, _batches(test_batches), device=device)
        history.append(record)
    return history
