"""A point's training interrupted by preemption continues from last.pt when the requeued job runs it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bnext.train.runner as train_runner
from bnext.ablate import tasks
from bnext.models import read_checkpoint


class Preempted(BaseException):
    """Stands for the job being stopped (Slurm's signal) right after the first epoch's last.pt."""


def _config(out: Path):
    return tasks.train_config("bnext18", out_dir=out, width=0.125, data="digits", input_size=8, epochs=2,
                              batch_size=32, steps_per_epoch=3, device="cpu", threads=1)


@pytest.mark.slow
def test_rerun_of_a_preempted_point_resumes_its_training(tmp_path: Path, monkeypatch):
    real_save = train_runner.save

    def save_then_stop(model, path, **extra):
        out = real_save(model, path, **extra)
        if Path(path).name == "last.pt":
            raise Preempted
        return out

    monkeypatch.setattr(train_runner, "save", save_then_stop)
    with pytest.raises(Preempted):
        tasks.train(_config(tmp_path / "job"))
    monkeypatch.undo()
    run_dir = tmp_path / "job"
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["extra"]["epoch"] == 1
    assert not (run_dir / "result.json").exists()

    resumed = tasks.train(_config(run_dir))  # what the requeued job's notebook calls
    assert not resumed["reused"] and resumed["epochs_done"] == 2 and resumed["finished"]
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    reference = tasks.train(_config(tmp_path / "uninterrupted"))
    a = read_checkpoint(run_dir / "checkpoints" / "last.pt")["state_dict"]
    b = read_checkpoint(Path(reference["run_dir"]) / "checkpoints" / "last.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
