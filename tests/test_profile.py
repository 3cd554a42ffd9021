import pytest

from bnext import models, profile

# paper Table 2 (w/o post-quant): BOPs 1e9, OPs 1e8, size MiB (reference-facts values)
TABLE2 = {
    "bnext18": (1.676, 1.643, 5.43),
    "bnext_t": (4.817, 0.886, 13.32),
    "bnext_s": (10.838, 1.905, 26.75),
    "bnext_m": (20.086, 3.381, 46.57),
    "bnext_l": (52.151, 8.543, 106.32),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TABLE2))
def test_counts_match_paper_table2(name):
    bops, ops, size = TABLE2[name]
    p = profile.count(models.create(name, num_classes=1000, input_size=224), 224)
    assert p.bops / 1e9 == pytest.approx(bops, rel=0.02)
    assert p.ops / 1e8 == pytest.approx(ops, rel=0.02)
    assert p.size_mib == pytest.approx(size, rel=0.02)


def test_bireal18_counts_match_literature():
    p = profile.count(models.create("bireal18"), 224)
    assert p.bops / 1e9 == pytest.approx(1.68, rel=0.02)
    assert p.flops / 1e8 == pytest.approx(1.378, rel=0.01)
    assert p.ops / 1e8 == pytest.approx(1.63, rel=0.02)


def test_counting_rules_on_a_tiny_model():
    from torch import nn

    from bnext.nn import BinaryConv2d

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), BinaryConv2d(4, 8, 3),
                          nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    p = profile.count(model, (1, 3, 5, 5))
    assert p.flops == 3 * 4 * 9 * 25 + 8 * 2
    assert p.bops == 4 * 8 * 9 * 25
    assert p.ops == pytest.approx(p.flops + p.bops / 64)
    assert p.binary_params == 4 * 8 * 9
    # 1 bit per binary weight, 32 bits for everything else (BN affine, linear weight+bias, stem)
    assert p.size_bits == 4 * 8 * 9 + 32 * (3 * 4 * 9 + 16 + 8 * 2 + 2)
    assert [layer.kind for layer in p.layers] == ["real", "binary", "real"]


def test_cli_prints_one_row_per_model(capsys):
    assert profile.main(["bireal18", "bnext18", "--input-size", "32", "--num-classes", "10", "--width", "0.25"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "model" and [line.split()[0] for line in out[2:]] == ["bireal18", "bnext18"]
    assert profile.main(["no_such_model"]) == 2
