"""The popcount bound's arithmetic and the measured machine limits (structure only: timings are benchmarks)."""

import platform

import pytest

from bnext.packed import roofline


def test_bound_of_the_issue_layer_at_the_nominal_clock():
    words = roofline.popcount_words(256, 256, 14 * 14, 3)
    assert words == 256 * 196 * 9 * 4
    # one 512-bit vpopcntq (8 words) per cycle at 2.6 GHz: the 0.087 ms the issue quotes
    assert roofline.bound_ms(words, 2.6e9) == pytest.approx(0.08684, abs=1e-5)
    assert roofline.bound_ms(words, 2.6e9, threads=2) == pytest.approx(0.08684 / 2, abs=1e-5)
    assert roofline.popcount_words(65, 10, 4, 1, batch=3) == 3 * 10 * 4 * 2  # 65 channels take 2 words


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 inline assembly")
def test_measure_reports_clock_and_vector_rates():
    peak = roofline.measure(repeats=2, seconds=0.0005)
    assert peak["clock_ghz"] > 0
    if roofline.has_vpopcntdq():
        for key in ("popcnt_zmm_per_s", "popcnt_zmm_per_cycle", "xor_popcnt_add_zmm_per_s",
                    "xor_popcnt_add_zmm_per_cycle"):
            assert peak[key] > 0, key
        assert peak["popcnt_zmm_per_cycle"] == pytest.approx(peak["popcnt_zmm_per_s"] / (peak["clock_ghz"] * 1e9))
    else:
        assert peak["popcnt_zmm_per_s"] is None
