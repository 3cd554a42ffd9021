import json

import h5py
import pytest
import torch

from bnext.models import load, read_checkpoint
from bnext.train import ConfigError, run
from bnext.train.trajectory import read_trajectory


def _params(path):
    return read_checkpoint(path)["state_dict"]


def test_run_writes_every_file(tiny_config, tmp_path):
    cfg = tiny_config(**{"trajectory.every": 1, "train.epochs": 3})
    result = run(cfg)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "result.json",
                                                 "trajectory.h5"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_top1", "train_top5", "test_loss", "test_top1", "test_top5", "lr", "tau",
                "seconds"):
        assert all(key in r for r in rows), key
    assert rows[0]["tau"] > 0 and rows[-1]["tau"] == 0.0  # progressive -> sign
    for name in ("last.pt", "best.pt"):
        torch.load(out / "checkpoints" / name, weights_only=True)
        model = load(out / "checkpoints" / name)
        assert model.spec["name"] == "bnext18" and model.spec["input_size"] == 8
    extra = read_checkpoint(out / "checkpoints" / "last.pt")["extra"]
    assert extra["epoch"] == 3 and "optimizer" in extra and "rng" in extra
    saved = json.loads((out / "result.json").read_text())
    assert saved["final_top1"] == rows[-1]["test_top1"] == result["final_top1"]
    assert saved["best_top1"] == max(r["test_top1"] for r in rows)
    assert saved["params"] > 0 and saved["seconds"] > 0
    epochs, params, spec = read_trajectory(out / "trajectory.h5")
    assert epochs.tolist() == [0, 1, 2, 3]
    assert spec["name"] == "bnext18"
    final = load(out / "checkpoints" / "last.pt")
    for name, p in final.named_parameters():
        assert params[name].shape == (4, *p.shape)
        assert torch.equal(torch.from_numpy(params[name][-1]), p.detach())
    with h5py.File(out / "trajectory.h5") as f:
        assert f.attrs["format"] == "bnext-trajectory" and f.attrs["version"] == 1
        assert f["params"][name].maxshape[0] is None
    reloaded = (out / "config.yaml").read_text()
    assert "name: tiny" in reloaded


def test_resume_is_bit_identical(tiny_config, tmp_path):
    run(tiny_config(tmp_path / "full", **{"trajectory.every": 1}))
    run(tiny_config(tmp_path / "cut", **{"train.stop_after": 1, "trajectory.every": 1}))
    assert read_checkpoint(tmp_path / "cut/checkpoints/last.pt")["extra"]["epoch"] == 1
    assert not (tmp_path / "cut/result.json").exists()
    run(tiny_config(tmp_path / "cut", resume="true", **{"trajectory.every": 1}))
    a, b = _params(tmp_path / "full/checkpoints/last.pt"), _params(tmp_path / "cut/checkpoints/last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ea = read_checkpoint(tmp_path / "full/checkpoints/last.pt")["extra"]
    eb = read_checkpoint(tmp_path / "cut/checkpoints/last.pt")["extra"]
    assert ea["optimizer"]["state"][0]["exp_avg"].equal(eb["optimizer"]["state"][0]["exp_avg"])
    rows_a = [json.loads(x) for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows_b]
    ta, tb = read_trajectory(tmp_path / "full/trajectory.h5"), read_trajectory(tmp_path / "cut/trajectory.h5")
    assert ta[0].tolist() == tb[0].tolist() == [0, 1, 2]


def test_mixup_and_sign_schedule_run(tiny_config, tmp_path):
    result = run(tiny_config(**{"data.augment": "standard+mixup", "binarize.schedule": "sign",
                                "lr_schedule.interval": "epoch", "binarize.interval": "epoch",
                                "model.name": "xnornet18", "train.epochs": 1}))
    assert result["tau"] == 0.0 and result["finished"]


def test_init_checkpoint_and_quant_hook(tiny_config, tmp_path):
    run(tiny_config(tmp_path / "a", **{"train.epochs": 1}))
    ckpt = tmp_path / "a/checkpoints/last.pt"
    cfg = tiny_config(tmp_path / "b", init_checkpoint=str(ckpt), **{"train.epochs": 1, "train.steps_per_epoch": 1})
    result = run(cfg)
    assert result["finished"] and result["epochs"] == 1
    with pytest.raises(ConfigError, match="holds model"):
        run(tiny_config(tmp_path / "c", init_checkpoint=str(ckpt), **{"model.name": "resnet18", "train.epochs": 1}))
    try:
        import bnext.quant as quant
    except ImportError:
        with pytest.raises(ConfigError, match="bnext.quant"):
            run(tiny_config(tmp_path / "d", **{"quant.spec": "8/8-4/8-4/8-8/8"}))
        return
    # quantize after init_checkpoint, then quant.finetune_epochs epochs replace train.epochs
    result = run(tiny_config(tmp_path / "q", init_checkpoint=str(ckpt), **{
        "quant.spec": "8/8-4/8-4/8-8/8", "quant.finetune_epochs": 1, "train.epochs": 7, "optim.lr": 1e-7}))
    assert result["finished"] and result["epochs"] == 1
    tuned = quant.load(tmp_path / "q/checkpoints/last.pt")
    assert tuned.quant_spec == "8/8-4/8-4/8-8/8"
    from bnext.models import load as load_model

    assert load_model(tmp_path / "q/checkpoints/last.pt").quant_spec == "8/8-4/8-4/8-8/8"
    # section 7.5: binary layers frozen, temperature kept, activation ranges calibrated
    init = load_model(ckpt)
    init_sd, tuned_sd = init.state_dict(), tuned.state_dict()
    from bnext.nn import binary_layers

    for name, layer in binary_layers(tuned):
        assert torch.equal(tuned_sd[f"{name}.weight"], init_sd[f"{name}.weight"]), name
        assert float(layer.tau) == float(init_sd[f"{name}.tau"])
    ranges = [v for k, v in tuned_sd.items() if k.endswith("min_val")]
    assert ranges and all(torch.isfinite(v).all() for v in ranges)


def test_loader_path_resume_is_bit_identical(tiny_config, tmp_path):
    """The per-sample DataLoader path (RandAugment needs it) resumes exactly too (RNG states restored)."""
    extra = {"data.in_memory": "false", "data.augment": "randaugment", "data.batch_size": 16,
             "train.steps_per_epoch": 2}
    full = run(tiny_config(tmp_path / "full", **extra))
    run(tiny_config(tmp_path / "cut", **extra, **{"train.stop_after": 1}))
    resumed = run(tiny_config(tmp_path / "cut", resume="true", **extra))
    a, b = _params(tmp_path / "full/checkpoints/last.pt"), _params(tmp_path / "cut/checkpoints/last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["final_top1"] == full["final_top1"]
    # resuming a finished run trains nothing and reports the same result
    again = run(tiny_config(tmp_path / "cut", resume="true", **extra))
    assert again["final_top1"] == full["final_top1"] and again["finished"]
    with pytest.raises(ConfigError, match="cannot resume"):
        run(tiny_config(tmp_path / "cut", resume="true", **extra, **{"train.epochs": 5}))
