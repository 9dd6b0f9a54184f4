"""The IDX reader and writer, and the checks made when a split is loaded."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmnist.data import load_split, read_idx, write_idx
from fastmnist.errors import DataError, InputError


def header(dims: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def put(path: Path, raw: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def peak_bytes(fn):
    """Run ``fn()``; return its result and the most memory it held at once (NumPy
    reports its allocations to tracemalloc)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


#: What a refused file may cost: far below the sizes its header declares.
SMALL_PEAK = 64 * 2**20


def read_error(path: Path) -> str:
    """The message of the DataError reading ``path`` raises; it must name the file."""
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    return str(info.value)


SMALL = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
SMALL_RAW = header(SMALL.shape) + SMALL.tobytes()


# --- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5,), (0,), (4, 7), (3, 28, 28), (2, 3, 4, 5), (1, 1, 1, 1)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_round_trip(tmp_path, shape, suffix):
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = write_idx(tmp_path / f"a{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape and back.flags.c_contiguous
    np.testing.assert_array_equal(back, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_write_accepts_non_contiguous_and_writes_deterministic_gzip(tmp_path, monkeypatch):
    arr = np.arange(100, dtype=np.uint8).reshape(10, 10).T
    a = write_idx(tmp_path / "a.gz", arr).read_bytes()
    monkeypatch.setattr(time, "time", lambda: 1e9)  # a timestamped gzip header would differ
    b = write_idx(tmp_path / "a.gz", arr).read_bytes()
    assert a == b
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


def test_write_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, np.zeros(3, np.uint8))
    write_idx(path, np.ones(5, np.uint8))
    np.testing.assert_array_equal(read_idx(path), np.ones(5, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]


@pytest.mark.parametrize(
    "arr",
    [np.zeros(3, np.int64), np.zeros(3, np.float32), np.uint8(3), np.zeros((1,) * 5, np.uint8)],
)
def test_write_rejects_what_the_reader_would_not_read(tmp_path, arr):
    with pytest.raises(InputError):
        write_idx(tmp_path / "x", arr)
    assert list(tmp_path.iterdir()) == []


def test_write_into_missing_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nope"):
        write_idx(tmp_path / "nope" / "x.gz", np.zeros(3, np.uint8))


def test_compression_is_detected_by_content_not_name(tmp_path):
    put(tmp_path / "plain.gz", SMALL_RAW)
    put(tmp_path / "packed", SMALL_RAW, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), SMALL)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed"), SMALL)


# --- malformed files ----------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", ["not an IDX file"]),
        (b"\x00\x01\x08\x01\x00\x00\x00\x01\x00", ["not an IDX file"]),
        (header((2,), 0x0D) + bytes(8), ["0x0d", "float32", "not supported"]),
        (header((2,), 0x09) + bytes(2), ["0x09", "signed byte"]),
        (header((2,), 0x07) + bytes(2), ["0x07", "unknown type code"]),
        (bytes([0, 0, 8, 0]), ["0 dimensions"]),
        (bytes([0, 0, 8, 5]) + bytes(20), ["5 dimensions"]),
        (SMALL_RAW + b"\x00", ["trailing"]),
        (SMALL_RAW[:-1], ["truncated"]),
        (SMALL_RAW[:17], ["truncated"]),
        (b"", ["truncated", "magic"]),
    ],
)
def test_malformed_file_raises_data_error_naming_file_and_problem(tmp_path, raw, words, gz):
    msg = read_error(put(tmp_path / "bad", raw, gz))
    for word in words:
        assert word in msg


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_at_every_header_boundary(tmp_path, gz):
    for cut in range(len(header(SMALL.shape))):
        msg = read_error(put(tmp_path / f"cut{cut}", SMALL_RAW[:cut], gz))
        assert "truncated" in msg, (cut, msg)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_anywhere_in_the_data(tmp_path, gz):
    start = len(header(SMALL.shape))
    for cut in range(start, len(SMALL_RAW)):
        msg = read_error(put(tmp_path / f"cut{cut}", SMALL_RAW[:cut], gz))
        assert "truncated" in msg and f"holds {cut - start}" in msg


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "dims",
    [
        (2**31, 2**31, 1),
        (2**32 - 1,) * 4,
        (60000 * 1000, 28, 28),
        (2**31, 2**31),
        (0, 5779, 22087698, 72258107),  # empty, yet a shape numpy cannot represent
    ],
)
def test_absurd_declared_size_fails_fast_without_allocating(tmp_path, dims, gz):
    path = put(tmp_path / "huge", header(dims) + bytes(100), gz)
    msg, peak = peak_bytes(lambda: read_error(path))  # a MemoryError would escape too
    assert peak < SMALL_PEAK
    assert "x".join(map(str, dims)) in msg


def test_plausible_size_with_little_data_reads_only_what_is_there(tmp_path):
    # Within the reader's limit, but the gzip stream holds 10 bytes: it must say truncated
    # after reading those, not allocate 3.7 GB first.
    path = put(tmp_path / "liar.gz", header((4_700_000, 28, 28)) + bytes(10), gz=True)
    msg, peak = peak_bytes(lambda: read_error(path))
    assert "truncated" in msg
    assert peak < SMALL_PEAK


def test_corrupt_gzip_stream(tmp_path):
    packed = bytearray(gzip.compress(SMALL_RAW * 50, mtime=0))
    packed[20:30] = b"\xff" * 10
    msg = read_error(put_bytes(tmp_path / "c.gz", bytes(packed)))
    assert "gzip" in msg


def test_gzip_crc_mismatch(tmp_path):
    packed = bytearray(gzip.compress(SMALL_RAW, mtime=0))
    packed[-8] ^= 0xFF  # the CRC-32 in the trailer
    assert "gzip" in read_error(put_bytes(tmp_path / "crc.gz", bytes(packed)))


def test_gzip_ending_early(tmp_path):
    payload = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    packed = gzip.compress(header((5000,)) + payload, mtime=0)
    for cut in (2, 5, 10, len(packed) // 2, len(packed) - 8, len(packed) - 1):
        msg = read_error(put_bytes(tmp_path / f"early{cut}.gz", packed[:cut]))
        assert "gzip" in msg or "truncated" in msg


def test_garbage_after_gzip_stream(tmp_path):
    packed = gzip.compress(SMALL_RAW, mtime=0) + b"garbage!"
    read_error(put_bytes(tmp_path / "tail.gz", packed))


def test_missing_file_and_directory(tmp_path):
    assert "not found" in read_error(tmp_path / "absent.gz")
    read_error(tmp_path)


def put_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- loading a split ----------------------------------------------------------------------

def split_files(tmp_path, images, labels):
    return write_idx(tmp_path / "img.gz", images), write_idx(tmp_path / "lab.gz", labels)


def test_load_split_gives_contiguous_uint8_rows(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    split = load_split(*split_files(tmp_path, images, labels))
    assert len(split) == 7
    assert split.images.shape == (7, 784) and split.images.dtype == np.uint8
    assert split.images.flags.c_contiguous and split.labels.dtype == np.uint8
    np.testing.assert_array_equal(split.images_2d, images)
    assert np.shares_memory(split.images_2d, split.images)


@pytest.mark.parametrize(
    "images, labels, culprit, words",
    [
        (np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8), "lab", ["4 labels", "3 images"]),
        (np.zeros((3, 28, 28), np.uint8), np.array([1, 10, 2], np.uint8), "lab", ["label 10"]),
        (np.zeros((3, 27, 28), np.uint8), np.zeros(3, np.uint8), "img", ["27x28"]),
        (np.zeros((3, 784), np.uint8), np.zeros(3, np.uint8), "img", ["3x784"]),
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), "img", ["no images"]),
        (np.zeros((3, 28, 28), np.uint8), np.zeros((3, 1), np.uint8), "lab", ["3x1"]),
    ],
)
def test_load_split_rejects_inconsistent_files(tmp_path, images, labels, culprit, words):
    img, lab = split_files(tmp_path, images, labels)
    with pytest.raises(DataError) as info:
        load_split(img, lab)
    msg = str(info.value)
    assert str({"img": img, "lab": lab}[culprit]) in msg
    for word in words:
        assert word in msg


# --- properties: any input gives an array or a DataError, never anything else --------------

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def read_or_data_error(path: Path) -> np.ndarray | None:
    try:
        arr = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return None
    assert arr.dtype == np.uint8 and 1 <= arr.ndim <= 4 and arr.flags.c_contiguous
    return arr


@PROPERTY
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_random_bytes(tmp_path, data, gz):
    read_or_data_error(put(tmp_path / "r", data, gz))


@PROPERTY
@given(data=st.binary(max_size=64), dims=st.lists(st.integers(0, 2**32 - 1), max_size=5))
def test_random_header_then_bytes(tmp_path, data, dims):
    raw = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data
    arr = read_or_data_error(put(tmp_path / "h", raw))
    if arr is not None:
        assert arr.shape == tuple(dims) and arr.tobytes() == data


@PROPERTY
@given(flips=st.lists(st.integers(0, 10**6), min_size=1, max_size=4), gz=st.booleans())
def test_bit_flips_on_a_valid_file(tmp_path, flips, gz):
    blob = bytearray(gzip.compress(SMALL_RAW, mtime=0) if gz else SMALL_RAW)
    for f in flips:
        blob[(f // 8) % len(blob)] ^= 1 << (f % 8)
    arr = read_or_data_error(put_bytes(tmp_path / "f", bytes(blob)))
    if arr is not None and not gz:
        assert arr.size == len(blob) - (4 + 4 * arr.ndim)


@PROPERTY
@given(cut=st.integers(0, 10**6), gz=st.booleans())
def test_random_truncation(tmp_path, cut, gz):
    blob = gzip.compress(SMALL_RAW, mtime=0) if gz else SMALL_RAW
    cut %= len(blob)  # strictly shorter than the valid file
    assert read_or_data_error(put_bytes(tmp_path / "t", blob[:cut])) is None


def test_reading_60k_images_round_trips(tmp_path):
    # Its speed is benchmarked in benchmarks/test_data.py, not asserted here.
    images = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    images[images < 200] = 0  # MNIST-like sparsity
    raw = header(images.shape) + images.tobytes()
    for path in (put(tmp_path / "big", raw), put_fast_gzip(tmp_path / "big.gz", raw)):
        back = read_idx(path)
        assert back.shape == images.shape and back.tobytes() == images.tobytes()


def put_fast_gzip(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    return path


def test_invalid_deflate_data_is_wrapped(tmp_path):
    # A valid gzip header followed by a deflate block of the reserved type: zlib.error.
    blob = gzip.compress(b"", mtime=0)[:10] + b"\xff\xff\xff\xff" + bytes(8)
    with pytest.raises(zlib.error):
        zlib.decompressobj(31).decompress(blob)
    assert "gzip" in read_error(put_bytes(tmp_path / "z.gz", blob))
