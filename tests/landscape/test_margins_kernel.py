"""The binary-margin kernel equals torch's min |x + shift| per image (hypothesis hunts for a break)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape.engine.margins import min_abs_shift_


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
    with_shift=st.booleans(), seed=st.integers(0, 2**16), prior=st.floats(0.0, 3.0),
)
def test_kernel_equals_torch(n, c, h, w, with_shift, seed, prior):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    shift = torch.randn(c, generator=g) if with_shift else None
    out = np.full(n, prior, np.float32)  # a running minimum from earlier layers
    min_abs_shift_(x.numpy(), None if shift is None else shift.numpy(), out)
    v = (x + shift.view(1, -1, 1, 1)) if shift is not None else x
    want = torch.minimum(v.abs().flatten(1).amin(1), torch.full((n,), prior))
    assert np.array_equal(out, want.numpy())


def test_exact_zero_and_a_value_in_the_tail_are_found():
    x = np.ones((2, 3, 5, 7), np.float32)  # 105 elements: 6 blocks of 16 and a tail of 9
    x[0, 2, 4, 6] = -0.25  # the very last element (tail)
    x[1, 0, 0, 0] = 0.5
    shift = np.array([-0.5, 0.0, 0.0], np.float32)  # image 1's 0.5 - 0.5 = 0 exactly
    out = np.full(2, np.inf, np.float32)
    min_abs_shift_(x, shift, out)
    assert out.tolist() == [0.25, 0.0]


def test_large_activation_shared_over_workers_equals_torch():
    from landscape.engine.margins import SPLIT_BYTES

    old = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers share the images out
    try:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(9, 64, 24, 24, generator=g)  # 1.3 MB: above SPLIT_BYTES
        assert x.numel() * 4 >= SPLIT_BYTES
        shift = torch.randn(64, generator=g)
        out = np.full(9, np.inf, np.float32)
        min_abs_shift_(x.numpy(), shift.numpy(), out)
    finally:
        torch.set_num_threads(old)
    want = (x + shift.view(1, -1, 1, 1)).abs().flatten(1).amin(1)
    assert np.array_equal(out, want.numpy())
