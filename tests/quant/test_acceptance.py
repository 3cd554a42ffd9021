"""Issue 6 acceptance: Table 7's five rows on a digits-trained BNext-18 (trainer's digits config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnext import models
from bnext.quant import TABLE7_SPECS, format_table7, table7

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits_bnext18.yaml"


@pytest.mark.slow
def test_table7_on_digits_bnext18(tmp_path, capsys):
    train_mod = pytest.importorskip("bnext.train")
    from bnext.data import load_tensors

    # the digits config (width 0.25, 16x16), shortened to 4 epochs, one thread (about 30 s)
    cfg = train_mod.load_config(CONFIG, [f"output_dir={tmp_path}", "progress=false", "train.epochs=4", "threads=1"])
    train_mod.run(cfg)
    model = models.load(tmp_path / "checkpoints" / "last.pt")  # fully binary (tau = 0)
    assert model.spec["options"]["width"] == 0.25
    size = model.spec["input_size"]
    x, y = load_tensors("digits", "train", input_size=size)
    xt, yt = load_tensors("digits", "test", input_size=size)
    train = list(zip(x.split(128), y.split(128)))
    test = list(zip(xt.split(180), yt.split(180)))

    rows = table7(model, train, test, calib_batches=4)
    with capsys.disabled():
        print(f"\nTable 7 on digits, bnext18 width 0.25, {size}x{size}, 4 epochs:\n{format_table7(rows, 'bnext18')}")
    assert [r["spec"] for r in rows] == list(TABLE7_SPECS)
    assert rows[0]["top1"] > 80.0  # the float model learned the task
    assert all(r["top1"] > 50.0 for r in rows)
    assert abs(rows[1]["delta_top1"]) < 1.0  # 8-bit everywhere: less than one point
