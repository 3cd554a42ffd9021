"""Section 7.5 fine-tuning: AdamW (0.99, 0.999), lr 1e-7, no weight decay, binary layers frozen."""

from __future__ import annotations

import pytest
import torch

from bnext.nn import BinaryConv2d
from bnext.quant import FINETUNE_BETAS, FINETUNE_LR, calibrate, finetune, freeze_binary_layers, make_optimizer, quantize

from .conftest import small


def test_optimizer_settings_and_frozen_binary_layers():
    q = quantize(small("bnext18"), "8/8-4/8-4/8-8/8")
    n = freeze_binary_layers(q)
    binary = [m for m in q.modules() if isinstance(m, BinaryConv2d)]
    assert n == 2 * len(binary)  # weight + shift of every BNext binary conv
    assert all(not p.requires_grad for m in binary for p in m.parameters())
    opt = make_optimizer(q)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (FINETUNE_LR, FINETUNE_BETAS, 0.0)
    assert FINETUNE_LR == 1e-7 and FINETUNE_BETAS == (0.99, 0.999)
    frozen = {id(p) for m in binary for p in m.parameters()}
    assert not any(id(p) in frozen for p in group["params"])


def test_finetune_trains_only_non_binary_parameters(images):
    q = quantize(small("bnext18"), "8/8-4/8-4/8-8/8")
    labels = torch.arange(len(images)) % 10
    batches = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    calibrate(q, batches)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    history = finetune(q, batches, batches, epochs=1, lr=1e-3)
    assert len(history) == 1 and {"train", "test"} <= set(history[0])
    assert 0.0 <= history[0]["test"]["top1"] <= 100.0
    after = q.state_dict()
    binary = {n for n, m in q.named_modules() if isinstance(m, BinaryConv2d)}
    for key, value in before.items():
        owner = key.rpartition(".")[0]
        if owner in binary:
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["stem.0.weight"], before["stem.0.weight"])
    assert not torch.equal(after["head.classifier.weight"], before["head.classifier.weight"])
    se = "blocks.0.0.se.squeeze.weight"
    assert not torch.equal(after[se], before[se])


def test_finetune_argument_errors(images):
    q = quantize(small("bnext18"), "8/8-4/8-4/8-8/8")
    with pytest.raises(ValueError, match="epochs >= 0 and lr > 0"):
        finetune(q, [], epochs=1, lr=0.0)
    assert finetune(q, [], epochs=0) == []
