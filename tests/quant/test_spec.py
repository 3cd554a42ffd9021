"""I-S-E-O spec parsing (paper Table 7 notation)."""

from __future__ import annotations

import pytest

from bnext.quant import PAPER_SPEC, TABLE7_SPECS, Bits, QuantSpec, parse_spec, with_options


def test_table7_rows_parse_and_round_trip():
    assert len(TABLE7_SPECS) == 5
    for s in TABLE7_SPECS[1:]:
        assert str(parse_spec(s)) == s
    assert parse_spec("32/32").is_float
    assert str(parse_spec("32/32")) == "32/32-32/32-32/32-32/32"
    p = parse_spec(PAPER_SPEC)
    assert (p.input, p.squeeze, p.expand, p.output, p.downsample) == (Bits(8, 8), Bits(4, 8), Bits(4, 8),
                                                                       Bits(8, 8), Bits(32, 32))
    assert parse_spec("8/8-4/4-4/4-8/8").expand == Bits(4, 4)


def test_fifth_group_and_options_round_trip():
    s = "8/8-4/8-4/8-8/8-4/8;w=channel;a=channel;range=dynamic"
    p = parse_spec(s)
    assert p.downsample == Bits(4, 8)
    assert (p.weight_granularity, p.act_granularity, p.act_range) == ("channel", "channel", "dynamic")
    assert str(p) == s and parse_spec(str(p)) == p
    assert str(with_options(PAPER_SPEC, act_range="dynamic")) == PAPER_SPEC + ";range=dynamic"
    assert parse_spec(p) is p and isinstance(p, QuantSpec)
    assert parse_spec(" 8/32 - 32/8 - 4/4 - 8/8 ") == QuantSpec(Bits(8, 32), Bits(32, 8), Bits(4, 4), Bits(8, 8))


@pytest.mark.parametrize("bad,needle", [
    ("", "expected I-S-E-O like 8/8-4/8-4/8-8/8"),
    ("8/8-4/8-8/8", "got 3 groups, expected I-S-E-O like 8/8-4/8-4/8-8/8"),
    ("8-8-8-8", "group I is '8'"),
    ("8/8-4/8-4/8-8/x", "group O is '8/x'"),
    ("8/8-1/8-4/8-8/8", "weight bits 1 of group S must be 2-8 or 32"),
    ("8/8-16/8-4/8-8/8", "weight bits 16 of group S"),
    ("8/8-4/8-4/64-8/8", "activation bits 64 of group E"),
    ("8/8-4/8-4/8-8/8;w=row", "w='row'"),
    ("8/8-4/8-4/8-8/8;speed=fast", "option 'speed=fast'"),
    ("8/8-8/8-8/8-8/8-8/8-8/8", "got 6 groups"),
])
def test_parse_errors_are_clear(bad, needle):
    with pytest.raises(ValueError, match="invalid quantization spec") as e:
        parse_spec(bad)
    assert needle in str(e.value)


def test_with_options_rejects_unknown():
    with pytest.raises(ValueError, match="unknown spec option"):
        with_options(PAPER_SPEC, granularity="tensor")
