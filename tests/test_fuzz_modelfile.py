"""Property-based fuzzing of the model loader: only ModelFileError, never a crash or a hang."""

from __future__ import annotations

import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmnist import Model, ModelFileError, load_model

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return Model.initialize((3,), rng=0).save(Path(d) / "m.npz").read_bytes()


VALID = _valid_bytes()


def _load_bytes(tmp_path, content: bytes):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(content)
    try:
        return load_model(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)  # the error names the file
        return None


def test_the_valid_file_loads(tmp_path):
    assert _load_bytes(tmp_path, VALID) is not None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(tmp_path_factory, content):
    _load_bytes(tmp_path_factory.mktemp("f"), content)


@FUZZ
@given(st.integers(0, len(VALID) - 1))
def test_truncation_anywhere(tmp_path_factory, cut):
    assert _load_bytes(tmp_path_factory.mktemp("f"), VALID[:cut]) is None


@FUZZ
@given(st.lists(st.integers(0, len(VALID) * 8 - 1), min_size=1, max_size=8))
def test_bit_flips(tmp_path_factory, bits):
    data = bytearray(VALID)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    model = _load_bytes(tmp_path_factory.mktemp("f"), bytes(data))
    if model is not None:  # a flip the format cannot see must still give a sane model
        assert model.sizes[0] == 784 and model.sizes[-1] == 10 and model.is_finite()


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize("shape", [(2**40,), (2**31, 2**31), (10**6, 10**6, 10**6)])
def test_members_declaring_huge_arrays_are_refused_before_allocating(tmp_path, shape):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("format.npy", _npy_header(()) + np.float32(0).tobytes())
        zf.writestr("W0.npy", _npy_header(shape) + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="declares"):
        load_model(path)


def test_pickled_member_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "pickle.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("format.npy", _npy_header((1,), "|O") + b"\x80\x04N.")
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)
