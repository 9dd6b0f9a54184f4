"""The sixteen-pixel compress intrinsics list exactly what the scalar loops list."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmnist.backends._compress import LANES, gather_nonzero16, gather_union16  # noqa: E402

FILL = 7  # what the output buffers hold before: entries past the count must keep it


@njit(cache=False)
def _list_image(images, g, scale, idx, val, t, m0):
    """Every chunk of row ``g`` through the intrinsic, from list position ``m0``."""
    m = np.uint64(m0)
    for c in range(0, images.shape[1] - LANES + 1, LANES):
        m += gather_nonzero16(images, g, c, scale, idx, val, t, m)
    return m


@njit(cache=False)
def _union_chunk(images, g, col, skip, scales, ulist, xv, row, n):
    return gather_union16(images, g[0], g[1], g[2], g[3], col, skip, scales[0], scales[1],
                          scales[2], scales[3], ulist, xv, row, n)


def _images(data, dtype, rows, width):
    """Images with some pixels zero; float ones may hold NaN (which counts as nonzero)."""
    density = data.draw(st.sampled_from([0.0, 0.2, 1.0]), label="density")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    images = (rng.random((rows, width)) < density) * rng.integers(1, 256, (rows, width))
    images = images.astype(dtype)
    if dtype != np.uint8 and data.draw(st.booleans(), label="nan"):
        images[rng.integers(rows), rng.integers(width)] = np.nan
    return images


IMAGE_TYPES = [(np.uint8, np.float32), (np.uint8, np.float64), (np.float32, np.float32),
               (np.float64, np.float64)]


@settings(max_examples=30, deadline=None)
@given(data=st.data(), types=st.sampled_from(IMAGE_TYPES))
def test_gather_nonzero16_lists_the_nonzero_pixels_in_order(data, types):
    image_dtype, value_dtype = types
    images = _images(data, image_dtype, 3, LANES * data.draw(st.integers(1, 4)))
    g, m0 = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 5))
    scale = value_dtype(1 / 255)
    idx = np.full((2, m0 + images.shape[1] + LANES), FILL, np.uint32)
    val = np.full(idx.shape, FILL, value_dtype)
    m = _list_image(images, g, scale, idx, val, 1, m0)
    nonzero = np.flatnonzero(images[g] != 0)
    assert m - m0 == len(nonzero)
    np.testing.assert_array_equal(idx[1, m0:m], nonzero)
    np.testing.assert_array_equal(val[1, m0:m], images[g, nonzero].astype(value_dtype) * scale)
    assert (idx[1, m:] == FILL).all() and (idx[1, :m0] == FILL).all() and (idx[0] == FILL).all()
    assert (val[1, m:] == FILL).all() and (val[0] == FILL).all()


@settings(max_examples=30, deadline=None)
@given(data=st.data(), types=st.sampled_from(IMAGE_TYPES))
def test_gather_union16_lists_the_union_and_every_images_values(data, types):
    image_dtype, value_dtype = types
    images = _images(data, image_dtype, 5, 3 * LANES)
    g = np.array(data.draw(st.lists(st.integers(0, 4), min_size=4, max_size=4)))
    col = data.draw(st.integers(0, 2 * LANES))
    skip = data.draw(st.integers(0, LANES))
    n = data.draw(st.integers(0, 5))
    # a zero scale is how a partial block's missing samples are zeroed
    scales = np.array([data.draw(st.sampled_from([1 / 255, 1.0, 0.0])) for _ in range(4)],
                      value_dtype)
    ulist = np.full((2, n + LANES + 3), FILL, np.uint32)
    xv = np.full((2, 4, ulist.shape[1]), FILL, value_dtype)
    count = _union_chunk(images, g, col, skip, scales, ulist, xv, 1, n)
    pixels = np.arange(col + skip, col + LANES)
    union = pixels[(images[g][:, pixels] != 0).any(axis=0)]
    assert count == len(union)
    np.testing.assert_array_equal(ulist[1, n:n + count], union)
    for s in range(4):
        want = images[g[s], union].astype(value_dtype) * scales[s]
        np.testing.assert_array_equal(xv[1, s, n:n + count], want)
    assert (ulist[1, n + count:] == FILL).all() and (ulist[1, :n] == FILL).all()
    assert (ulist[0] == FILL).all() and (xv[0] == FILL).all()
    assert (xv[1, :, n + count:] == FILL).all() and (xv[1, :, :n] == FILL).all()


def test_the_intrinsics_compile_to_compress_instructions_on_avx512():
    images = np.zeros((1, LANES), np.uint8)
    idx, val = np.zeros((1, LANES), np.uint32), np.zeros((1, LANES), np.float32)
    _list_image(images, 0, np.float32(1), idx, val, 0, 0)
    asm = next(iter(_list_image.inspect_asm().values()))
    if "zmm" not in asm:
        pytest.skip("no AVX-512 here: LLVM expands the compress stores into scalar code")
    assert "vpcompressd" in asm and "vcompressps" in asm


def test_the_intrinsics_refuse_arrays_of_the_wrong_shape():
    @njit(cache=False)
    def misuse(images, idx, val):
        return gather_nonzero16(images, 0, 0, np.float32(1), idx, val, 0, 0)

    with pytest.raises(TypingError):
        misuse(np.zeros(LANES, np.uint8), np.zeros((1, LANES), np.uint32),
               np.zeros((1, LANES), np.float32))
