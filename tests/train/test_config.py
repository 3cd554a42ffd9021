from pathlib import Path

import pytest
import yaml

from bnext.train import Config, ConfigError, load_config
from bnext.train.__main__ import main
from bnext.train.config import valid_keys

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg.optim.lr == 1e-3 and cfg.optim.betas == [0.99, 0.999]
    assert cfg.optim.weight_decay == 1e-3 and cfg.optim.binary_weight_decay == 1e-8
    assert cfg.lr_schedule.warmup_epochs == 5 and cfg.train.clip_grad == 5.0 and cfg.train.latent_clip == 1.5
    assert cfg.quant.spec is None and cfg.quant.finetune_epochs == 0 and cfg.init_checkpoint is None
    assert cfg.run_dir == Path("runs/run")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = load_config(path, allow_missing=True)
    assert cfg.name == path.stem
    assert cfg.run_dir == Path("runs") / path.stem


def test_paper_configs():
    c = load_config("configs/cifar10_bnext18.yaml", ["data.root=/x"])
    assert (c.data.batch_size, c.train.epochs, c.data.augment, c.data.input_size) == (128, 256, "standard", 32)
    assert not c.kd.enabled
    teachers = {
        "t": ("efficientnet_b2", ["efficientnet_b0"]),
        "s": ("efficientnet_b2", ["efficientnet_b0"]),
        "m": ("efficientnet_b4", ["efficientnet_b0", "efficientnet_b2"]),
        "l": ("convnext_tiny", ["efficientnet_b0", "efficientnet_b4", "convnext_tiny"]),
    }
    for k, (strong, assistants) in teachers.items():
        c = load_config(f"configs/imagenet_bnext_{k}.yaml", allow_missing=True)
        assert (c.data.batch_size, c.train.epochs, c.data.augment, c.data.input_size) == (512, 512, "randaugment", 224)
        assert c.model.name == f"bnext_{k}" and c.kd.enabled
        assert c.kd.strong.arch == strong and [a.arch for a in c.kd.assistants] == assistants


def test_required_keys_fail_clearly():
    with pytest.raises(ConfigError, match=r"kd\.strong\.weights.*local file path"):
        load_config("configs/imagenet_bnext_m.yaml", ["data.root=/d"])
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config("configs/cifar10_bnext18.yaml")
    cfg = load_config("configs/imagenet_bnext_m.yaml", ["data.root=/d", "kd.strong.weights=/w/b4.pth",
                                                         "kd.assistants.0.weights=/w/b0.pth",
                                                         "kd.assistants.1.weights=/w/b2.pth"])
    assert cfg.kd.assistants[1].weights == "/w/b2.pth"


def test_overrides_are_coerced():
    cfg = load_config("configs/digits_bnext18.yaml", [
        "train.epochs=3", "optim.lr=1e-4", "model.options.info_rcp=false", "optim.betas=[0.9, 0.99]",
        "data.input_size=null", "binarize.end_fraction=1", "model.width=0.5", "progress=no",
    ])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.model.options["info_rcp"] is False and cfg.model.options["elm_attention"] is True
    assert cfg.optim.betas == [0.9, 0.99] and cfg.data.input_size is None
    assert cfg.binarize.end_fraction == 1.0 and cfg.progress is False
    with pytest.raises(ConfigError, match="expects int"):
        load_config(None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_unknown_keys_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['train.epoch'\].*valid keys: epochs"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown config key.*'lr'"):
        load_config(None, ["lr=3"])
    (tmp_path / "bad.yaml").write_text("data:\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="one of"):
        load_config(None, ["binarize.schedule=linear"])
    with pytest.raises(ConfigError, match="unknown model"):
        load_config(None, ["model.name=resnet9000"])
    with pytest.raises(ConfigError, match="augmentation"):
        load_config(None, ["data.augment=standard+blur"])
    with pytest.raises(ConfigError, match=r"kd.assistants.0.arch.*not a torchvision"):
        load_config("configs/imagenet_bnext_t.yaml", ["kd.assistants.0.arch=efficientnet_b9"], allow_missing=True)


def test_to_dict_roundtrip(tmp_path):
    cfg = load_config("configs/digits_kd_bnext18.yaml")
    cfg.save(tmp_path / "c.yaml")
    again = Config.from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text()))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    keys = set(valid_keys())
    assert {"kd.strong.weights", "kd.assistants", "kd.temperature", "quant.spec", "init_checkpoint"} <= keys


def test_cli_errors_and_print(capsys):
    assert main(["--config", "configs/digits_bnext18.yaml", "train.epoch=1"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["--config", "configs/imagenet_bnext_t.yaml", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["kd"]["strong"]["arch"] == "efficientnet_b2"
    assert main(["--config", "configs/imagenet_bnext_t.yaml", "data.root=/d"]) == 2
    assert "kd.strong.weights" in capsys.readouterr().err
