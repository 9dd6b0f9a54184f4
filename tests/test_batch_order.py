"""The order inside each mini-batch: by label, stably, with the same samples in every step."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmnist.backends._batch_order import by_label_within_batches  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), batch_size=st.integers(1, 70), n_classes=st.integers(1, 10),
       seed=st.integers(0, 2**32 - 1))
def test_each_batch_is_its_own_samples_stably_sorted_by_label(n, batch_size, n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, 2 * n + 1).astype(np.uint8)
    order = rng.integers(0, len(labels), n).astype(np.int64)  # repeats allowed, as in the kernels
    got = by_label_within_batches(order, labels, batch_size)
    assert got.dtype == np.int64 and got.shape == order.shape
    for first in range(0, n, batch_size):
        batch = order[first:first + batch_size]
        want = batch[np.argsort(labels[batch], kind="stable")]
        np.testing.assert_array_equal(got[first:first + batch_size], want)
