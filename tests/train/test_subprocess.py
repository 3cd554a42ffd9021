"""End-to-end: SIGKILL + --resume in a real process, and DDP (2 gloo processes under torchrun)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnext.data import load_tensors
from bnext.models import load, read_checkpoint
from bnext.train import evaluate, load_config, run

from .conftest import tiny_overrides

ROOT = Path(__file__).parents[2]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    extra = {"train.epochs": 6, "train.steps_per_epoch": 4}
    out = tmp_path / "killed"
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    cmd = [sys.executable, "-m", "bnext.train", "--config", str(base), *tiny_overrides(out, **extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    done = read_checkpoint(last)["extra"]["epoch"]
    assert done < 6, "the process finished before it could be killed"
    assert not (out / "result.json").exists()
    # resume in a fresh process through the CLI, then the uninterrupted reference in this process
    subprocess.run(cmd + ["--resume"], cwd=ROOT, env=_env(), check=True, capture_output=True)
    run(load_config(None, tiny_overrides(tmp_path / "ref", **extra)))
    a = read_checkpoint(last)["state_dict"]
    b = read_checkpoint(tmp_path / "ref/checkpoints/last.pt")["state_dict"]
    for k in b:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "result.json").read_text())["finished"]


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_single_process(tmp_path):
    """2 processes x 16 samples == 1 process x 32 samples in 2 micro-batches (BatchNorm per chunk)."""
    extra = {"train.epochs": 1, "train.steps_per_epoch": 2, "device": "cpu", "lr_schedule.warmup_epochs": 0}
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bnext.train",
           "--config", str(base), *tiny_overrides(tmp_path / "ddp", **extra)]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    single = run(load_config(None, tiny_overrides(tmp_path / "single", **extra, **{"train.micro_batches": 2})))
    ddp_result = json.loads((tmp_path / "ddp/result.json").read_text())
    assert ddp_result["world_size"] == 2 and single["world_size"] == 1
    a = read_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    b = read_checkpoint(tmp_path / "single/checkpoints/last.pt")
    names = [k for k, _ in load(tmp_path / "single/checkpoints/last.pt").named_parameters()]
    for k in names:
        assert torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6, rtol=0), k
    # the test metrics are reduced over both processes' shards of the 360 test images
    rows = [json.loads(x) for x in (tmp_path / "ddp/metrics.jsonl").read_text().splitlines()]
    single_rows = [json.loads(x) for x in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_loss"] == pytest.approx(single_rows[0]["train_loss"], abs=1e-5)
    # test metrics reduced over both processes' shards == the saved model evaluated in one process
    x, y = load_tensors("digits", "test", input_size=8)
    full = evaluate(load(tmp_path / "ddp/checkpoints/last.pt"), [(x, y)], device="cpu")
    assert full["count"] == 360
    assert rows[0]["test_top1"] == pytest.approx(full["top1"], abs=1e-9)
    assert rows[0]["test_loss"] == pytest.approx(full["loss"], rel=1e-5)
