import torch

import bnext
from bnext.packed import load, pack
from bnext.packed.__main__ import main

from .conftest import make_model


def test_cli_pack_info_and_load(tmp_path, capsys):
    model = make_model("bnext18", 32, 0.2)
    ckpt = tmp_path / "run" / "best.pt"
    bnext.models.save(model, ckpt)
    out = tmp_path / "model.bnx"
    assert main(["pack", str(ckpt), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "wrote" in printed.out
    steps = [line.split(" ", 1)[0] for line in printed.err.splitlines()]  # it talks on stderr while it works
    assert steps == ["loading", "packing", "writing"], printed.err
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load(out)(x), pack(model)(x))
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bnext18" in text and "blocks.0.0.conv" in text and "MiB" in text


def test_cli_pack_refuses_soft_weights_unless_asked(tmp_path, capsys):
    model = make_model("bnext18", 32, 0.1)
    bnext.nn.set_tau(model, 0.5)
    ckpt = tmp_path / "soft.pt"
    bnext.models.save(model, ckpt)
    assert main(["pack", str(ckpt), "-o", str(tmp_path / "a.bnx")]) == 2
    assert "not fully binarized" in capsys.readouterr().err
    assert main(["pack", str(ckpt), "-o", str(tmp_path / "a.bnx"), "--binarize"]) == 0


def test_cli_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.bnx"
    bad.write_bytes(b"not a model")
    assert main(["info", str(bad)]) == 2
    assert "bad.bnx" in capsys.readouterr().err
    assert main(["pack", str(bad)]) == 2
    assert "bad.bnx" in capsys.readouterr().err


def test_cli_bench_prints_ratio(capsys):
    assert main(["bench", "--model", "bnext18", "--input-size", "32", "--width", "0.1", "--repeats", "1",
                 "--threads", "2"]) == 0
    text = capsys.readouterr().out
    assert "ratio" in text and "threads: 2" in text and "CPU:" in text
