"""The switches that reproduce the authors' training script (configs/imagenet_bnext_t_authors.yaml)."""

import json
import math

import pytest
import torch

from bnext.data import build_transform
from bnext.nn import SIGN_THRESHOLD
from bnext.train import ConfigError, load_config, run, tau_at
from bnext.train.schedule import build_lr_scheduler


def test_authors_config_sets_their_recipe():
    cfg = load_config("configs/imagenet_bnext_t_authors.yaml", allow_missing=True)
    paper = load_config("configs/imagenet_bnext_t.yaml", allow_missing=True)
    assert cfg.optim.betas == [0.9, 0.999] and paper.optim.betas == [0.99, 0.999]
    assert (cfg.lr_schedule.cosine_length, paper.lr_schedule.cosine_length) == ("total", "remaining")
    assert (cfg.binarize.schedule, cfg.binarize.decay) == ("exponential", 0.9)
    assert (cfg.data.eval_crop, cfg.data.eval_interpolation) == (0.95, "bicubic")
    assert (paper.data.eval_crop, paper.data.eval_interpolation) == (0.875, "bilinear")
    assert cfg.model.options["clamp_mix"] is False
    with pytest.raises(ConfigError, match="binarize.decay"):
        load_config(None, ["binarize.decay=1.5"])
    with pytest.raises(ConfigError, match="cosine_length"):
        load_config(None, ["lr_schedule.cosine_length=half"])


def test_exponential_temperature_is_their_x09_per_epoch():
    taus = [tau_at(e / 512, schedule="exponential", decay=0.9, epochs=512) for e in range(200)]
    assert taus[:3] == pytest.approx([1.0, 0.9, 0.81])
    assert taus[100] == pytest.approx(0.9**100)
    first_sign = next(e for e, t in enumerate(taus) if t <= SIGN_THRESHOLD)
    assert first_sign == 132  # theirs (threshold 1e-7) from epoch 153
    assert next(e for e, t in enumerate(taus) if t < 1e-7) == 153


def test_cosine_over_all_epochs_after_warmup():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = build_lr_scheduler(opt, total_steps=20, warmup_steps=5, warmup_lr=1e-5, min_lr=1e-7,
                               cosine_length="total")
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for i in range(5, 20):
        assert lrs[i] == pytest.approx(1e-7 + (1e-3 - 1e-7) * (1 + math.cos(math.pi * (i - 5) / 20)) / 2, rel=1e-6)
    assert lrs[-1] > 1e-4  # never reaches min_lr


@pytest.mark.slow
def test_run_follows_the_switches(tiny_config, tmp_path):
    cfg = tiny_config(**{"train.epochs": 3, "lr_schedule.interval": "epoch", "lr_schedule.warmup_epochs": 1,
                         "lr_schedule.cosine_length": "total", "binarize.schedule": "exponential",
                         "binarize.interval": "epoch", "model.options.clamp_mix": "false"})
    run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["tau"] for r in rows] == pytest.approx([1.0, 0.9, 0.81])
    base = 1e-3
    assert [r["lr"] for r in rows] == pytest.approx(
        [1e-5, base, 1e-7 + (base - 1e-7) * (1 + math.cos(math.pi / 3)) / 2], rel=1e-6)


def test_eval_crop_and_interpolation():
    # a horizontal ramp: the first output column shows where the center crop starts in the source
    ramp = torch.linspace(0, 1, 400).expand(3, 400, 400).contiguous()
    left = {}
    for crop in (0.875, 0.95, 1.0):
        t = build_transform("none", train=False, input_size=224, mean=(0, 0, 0), std=(1, 1, 1), eval_crop=crop,
                            interpolation="bicubic")
        left[crop] = t(ramp)[0, 100, 0].item()
        assert abs(left[crop] - (1 - crop) / 2) < 0.01
    with pytest.raises(ValueError, match="eval_crop"):
        build_transform("none", train=False, input_size=224, mean=(0,) * 3, std=(1,) * 3, eval_crop=1.2)
    with pytest.raises(ValueError, match="interpolation"):
        build_transform("none", train=False, input_size=224, mean=(0,) * 3, std=(1,) * 3, interpolation="area")
