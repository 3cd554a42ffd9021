"""A digits distillation run end to end: workbench-trained teachers, gap-sensitive two-teacher KD."""

import json

import pytest

from bnext.train import load_config, run
from tests.train.conftest import tiny_overrides


@pytest.mark.slow
def test_digits_two_teacher_kd_run(tmp_path):
    teacher = {"model.name": "resnet18", "binarize.schedule": "sign"}
    run(load_config(None, tiny_overrides(tmp_path / "strong", **teacher, **{"train.epochs": 3,
                                                                              "train.steps_per_epoch": 8})))
    run(load_config(None, tiny_overrides(tmp_path / "assistant", **teacher, **{"train.epochs": 1})))
    strong = tmp_path / "strong/checkpoints/best.pt"
    assistant = tmp_path / "assistant/checkpoints/best.pt"
    overrides = tiny_overrides(tmp_path / "student", **{"train.epochs": 4, "train.steps_per_epoch": 6})
    cfg = load_config("configs/digits_kd_bnext18.yaml", overrides + [
        f"kd.strong.weights={strong}", f"kd.assistants.0.weights={assistant}",
    ])
    assert cfg.kd.enabled and cfg.kd.ensemble == "gap_sensitive" and cfg.model.name == "bnext18"
    result = run(cfg)
    assert result["finished"]
    rows = [json.loads(x) for x in (tmp_path / "student/metrics.jsonl").read_text().splitlines()]
    kd = [r["kd_loss"] for r in rows]
    assert all(r["assistant"] == 0 for r in rows)  # one assistant: always active
    assert kd[-1] < kd[0], kd
    assert all(v >= 0 for v in kd)
