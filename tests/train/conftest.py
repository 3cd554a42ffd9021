"""Tiny, fast training configs shared by the trainer tests."""

from __future__ import annotations

import pytest

from bnext.train import load_config


def tiny_overrides(out, **extra) -> list[str]:
    """A bnext18 at width 1/8 on 8x8 digits, a few steps per epoch."""
    base = {
        "name": "tiny",
        "output_dir": str(out),
        "threads": 1,
        "progress": "false",
        "model.name": "bnext18",
        "model.width": 0.125,
        "data.name": "digits",
        "data.input_size": 8,
        "data.augment": "standard",
        "data.batch_size": 32,
        "train.epochs": 2,
        "train.steps_per_epoch": 3,
        "lr_schedule.warmup_epochs": 0.5,
        "lr_schedule.interval": "step",
        "binarize.end_fraction": 0.6,
        "binarize.interval": "step",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_config(tmp_path):
    def make(out=None, **extra):
        return load_config(None, tiny_overrides(out or tmp_path / "run", **extra))

    return make
