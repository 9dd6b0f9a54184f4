"""The prefetch hint: compiles for the arrays the kernels pass and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from fastmnist.backends import _prefetch
from fastmnist.backends._prefetch import prefetch


@njit(cache=False)
def _hint_every_row_then_sum(a):
    for i in range(a.shape[0]):
        prefetch(a, i, 0)
        prefetch(a, np.uint64(i), a.shape[1] - 1)  # unsigned indices, as in the kernels
    return a.sum()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_prefetch_leaves_the_array_and_the_result_alone(dtype):
    a = (np.arange(3 * 784) % 251).astype(dtype).reshape(3, 784)
    before = a.copy()
    assert _hint_every_row_then_sum(a) == before.sum()
    np.testing.assert_array_equal(a, before)


def test_prefetch_is_emitted_where_llvm_names_it_by_address_space():
    if _prefetch._NAME is None:
        pytest.skip("LLVM older than 17: the hint is left out")
    a = np.zeros((2, 784), np.uint8)
    _hint_every_row_then_sum(a)
    ir = next(iter(_hint_every_row_then_sum.inspect_llvm().values()))
    assert f"call void @{_prefetch._NAME}(" in ir


def test_prefetch_refuses_anything_but_a_2d_c_array():
    @njit(cache=False)
    def hint(a):
        prefetch(a, 0, 0)

    with pytest.raises(TypingError):
        hint(np.zeros(5))
