"""Per-epoch checkpoints (``train.save_every``) and ``python -m bnext.evaluate`` with its input-size refusal."""

import json

import pytest
import torch

from bnext.evaluate import main as evaluate_main
from bnext.models import load, read_checkpoint
from bnext.train import run


@pytest.mark.slow
def test_save_every_and_evaluate(tiny_config, tmp_path, capsys):
    run(tiny_config(**{"train.epochs": 3, "train.save_every": 2}))
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("epoch_*.pt")) == ["epoch_002.pt"]
    assert not list(ckpts.glob(".*"))  # atomic writes leave no temporaries
    epoch2 = read_checkpoint(ckpts / "epoch_002.pt")
    assert epoch2["extra"]["epoch"] == 2 and epoch2["input_size"] == 8
    last = read_checkpoint(ckpts / "last.pt")["state_dict"]
    assert any(not torch.equal(v, last[k]) for k, v in epoch2["state_dict"].items() if v.is_floating_point())

    # evaluation: the CLI's numbers equal an independent evaluation of the loaded model
    assert evaluate_main([str(ckpts / "last.pt"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    from bnext.data import load_tensors

    x, y = load_tensors("digits", "test", input_size=8)
    model = load(ckpts / "last.pt").eval()
    with torch.no_grad():
        logits = model(x)
    assert got["samples"] == 360 and got["input_size"] == 8 and got["kind"] == "checkpoint"
    assert abs(got["loss"] - torch.nn.functional.cross_entropy(logits, y).item()) < 1e-5
    assert abs(got["top1"] - 100 * int((logits.argmax(1) == y).sum()) / 360) < 1e-9
    top5 = int((logits.topk(5, 1).indices == y[:, None]).any(1).sum())
    assert abs(got["top5"] - 100 * top5 / 360) < 1e-9
    assert evaluate_main([str(ckpts / "last.pt")]) == 0
    assert "top-1" in capsys.readouterr().out

    # another input size than the checkpoint's: refused, by the CLI and by the loaded model
    assert evaluate_main([str(ckpts / "last.pt"), "--input-size", "16"]) == 2
    assert "input images are 16x16 but this model was trained for 8x8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="trained for 8x8"):
        model(torch.zeros(2, 3, 16, 16))
    assert evaluate_main([str(tmp_path / "missing.pt")]) == 2


@pytest.mark.slow
def test_packed_model_refuses_other_input_sizes(tiny_config, tmp_path, capsys):
    from bnext import packed
    from bnext.nn import set_tau

    run(tiny_config(**{"train.epochs": 1}))
    model = load(tmp_path / "run" / "checkpoints" / "last.pt").eval()
    set_tau(model, 0.0)
    path = packed.save(packed.pack(model), tmp_path / "m.bnx")
    loaded = packed.load(path)
    with pytest.raises(ValueError, match="input images are 16x16 but this model was trained for 8x8"):
        loaded(torch.zeros(1, 3, 16, 16))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(loaded(x), packed.pack(model)(x))
    assert evaluate_main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "packed"
    assert evaluate_main([str(path), "--input-size", "16"]) == 2
    assert "trained for 8x8" in capsys.readouterr().err
