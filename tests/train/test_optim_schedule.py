import math

import pytest
import torch

from bnext.models import create
from bnext.nn import SIGN_THRESHOLD, BinaryConv2d
from bnext.train import build_lr_scheduler, param_groups, tau_at
from bnext.train.optim import build_optimizer


def test_param_groups_rule():
    model = create("bnext18", num_classes=10, input_size=16, width=0.125)
    groups = {g["name"]: g for g in param_groups(model, wd_real=1e-3, wd_binary=1e-8)}
    assert groups["binary"]["weight_decay"] == 1e-8 and groups["real"]["weight_decay"] == 1e-3
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    named = dict(model.named_parameters())
    assert set().union(*ids.values()) == {id(p) for p in named.values()}
    assert not ids["binary"] & ids["real"]
    for name, p in named.items():
        leaf = name.rsplit(".", 1)[-1]
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(owner, BinaryConv2d) or leaf in ("shift", "mix_weight") or p.ndim == 4:
            assert id(p) in ids["binary"], name  # latent weights, conv kernels, shifts, mix weights
        if isinstance(owner, torch.nn.BatchNorm2d | torch.nn.PReLU | torch.nn.Linear) or leaf == "bias":
            assert id(p) in ids["real"], name
    assert id(model.head.classifier.weight) in ids["real"]
    opt = build_optimizer(model)
    assert opt.defaults["betas"] == (0.99, 0.999) and opt.defaults["lr"] == 1e-3


def _lrs(total, warmup, per=1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = build_lr_scheduler(opt, total_steps=total * per, warmup_steps=warmup * per, warmup_lr=1e-5, min_lr=1e-7)
    out = []
    for _ in range(total * per):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine():
    lrs = _lrs(20, 5)
    assert lrs[0] == pytest.approx(1e-5)
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))
    assert lrs[5] == pytest.approx(1e-3)
    assert lrs[1] - lrs[0] == pytest.approx((1e-3 - 1e-5) / 5)
    for i in range(5, 20):  # cosine from 1e-3 to 1e-7 over the remaining 15 epochs
        expect = 1e-7 + (1e-3 - 1e-7) * (1 + math.cos(math.pi * (i - 5) / 15)) / 2
        assert lrs[i] == pytest.approx(expect, rel=1e-6)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    assert _lrs(10, 0)[0] == pytest.approx(1e-3)
    per_step = _lrs(4, 1, per=10)
    assert per_step[0] == pytest.approx(1e-5) and per_step[10] == pytest.approx(1e-3)


def test_tau_schedule():
    kw = dict(tau_start=1.0, tau_end=1e-5, end_fraction=0.4)
    assert tau_at(0.0, **kw) == 1.0
    ps = [i / 100 for i in range(101)]
    taus = [tau_at(p, **kw) for p in ps]
    assert all(a > b for a, b in zip(taus[:40], taus[1:40]))
    assert tau_at(0.2, **kw) == pytest.approx(10**-2.5)  # geometric: halfway in log space
    assert tau_at(0.3999, **kw) == pytest.approx(1e-5, rel=1e-2) and tau_at(0.3999, **kw) > SIGN_THRESHOLD
    assert all(t == 0.0 for p, t in zip(ps, taus) if p >= 0.4)  # exactly sign afterwards
    assert tau_at(0.5, schedule="sign") == 0.0 and tau_at(0.0, schedule="sign") == 0.0
    assert tau_at(0.5, end_fraction=0.0) == 0.0
    with pytest.raises(ValueError):
        tau_at(0.1, schedule="linear")
