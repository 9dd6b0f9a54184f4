"""Arrays on 2 MB pages (fastmnist.hugepages) and the Numba backend's staging of W0 in them."""

from __future__ import annotations

import mmap
import threading

import numpy as np
import pytest

from fastmnist import Model, get_backend, hugepages
from fastmnist.backends import numba_backend as nb_module
from fastmnist.data import read_idx, write_idx
from fastmnist.optim import SGD

needs_advice = pytest.mark.skipif(hugepages._ADVICE is None, reason="no MADV_HUGEPAGE here")


@needs_advice
@pytest.mark.parametrize("shape, dtype", [((784, 128), "float32"), ((60_000, 784), "uint8"),
                                          (3_000_001, "float64")])
def test_large_arrays_start_on_a_huge_page_boundary_in_their_own_mapping(shape, dtype):
    a = hugepages.empty(shape, dtype)
    assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
    assert a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % hugepages.HUGE_PAGE == 0
    mapping = a  # the byte array over the whole mapping
    while isinstance(mapping.base, np.ndarray):
        mapping = mapping.base
    assert isinstance(mapping.base, memoryview) and isinstance(mapping.base.obj, mmap.mmap)
    # The mapping reaches past the array's last huge page: all of it can be one.
    last = a.ctypes.data + -(-a.nbytes // hugepages.HUGE_PAGE) * hugepages.HUGE_PAGE
    assert last <= mapping.ctypes.data + mapping.nbytes
    a[...] = 7  # every byte can be written
    assert a.reshape(-1)[-1] == 7


def test_small_arrays_are_ordinary():
    a = hugepages.empty((10, 10), "float32")
    assert a.shape == (10, 10) and a.dtype == np.float32 and a.base is None


def test_numpy_integers_are_shapes_too():
    assert hugepages.empty(np.int64(70_000), np.uint8).shape == (70_000,)
    assert hugepages.empty((np.int32(300), 784), "uint8").shape == (300, 784)


def test_without_the_advice_or_the_mapping_arrays_are_ordinary(monkeypatch):
    monkeypatch.setattr(hugepages, "_ADVICE", None)
    assert hugepages.empty((784, 512), "float32").base is None
    monkeypatch.setattr(hugepages, "_ADVICE", 14)

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(hugepages.mmap, "mmap", refuse)
    a = hugepages.empty((784, 512), "float32")
    assert a.shape == (784, 512) and a.base is None


@pytest.mark.parametrize("text, expected", [("always [madvise] never\n", "madvise"),
                                            ("[always] madvise never\n", "always"),
                                            ("always madvise [never]\n", "never"),
                                            ("", None)])
def test_the_huge_page_mode_is_read_from_the_kernel_setting(tmp_path, monkeypatch, text,
                                                           expected):
    setting = tmp_path / "enabled"
    setting.write_text(text)
    monkeypatch.setattr(hugepages, "_ADVICE", 14)
    monkeypatch.setattr(hugepages, "_MODE_FILE", str(setting))
    assert hugepages.mode() == expected
    monkeypatch.setattr(hugepages, "_MODE_FILE", str(tmp_path / "missing"))
    assert hugepages.mode() is None
    monkeypatch.setattr(hugepages, "_MODE_FILE", str(setting))
    monkeypatch.setattr(hugepages, "_ADVICE", None)  # not Linux
    assert hugepages.mode() is None


def test_staging_copies_into_one_buffer_per_slot_shape_and_thread():
    rng = np.random.default_rng(0)
    w, v = rng.random((784, 40)), rng.random((784, 40))
    s0 = hugepages.staged(w)
    np.testing.assert_array_equal(s0, w)
    assert s0 is not w
    s1 = hugepages.staged(v, slot=1)
    assert not np.shares_memory(s0, s1)
    np.testing.assert_array_equal(s0, w)  # slot 1 left slot 0 alone
    again = hugepages.staged(v)
    assert np.shares_memory(again, s0)  # reused, now holding v
    np.testing.assert_array_equal(again, v)
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(hugepages.staged(w)))
    thread.start()
    thread.join()
    assert not np.shares_memory(elsewhere[0], again)  # each thread its own buffers
    other = hugepages.staged(rng.random((784, 41)))
    assert other.shape == (784, 41) and not np.shares_memory(other, again)


@needs_advice
@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_the_idx_reader_puts_large_arrays_on_huge_pages(tmp_path, name):
    images = np.random.default_rng(1).integers(0, 256, (200, 784)).astype(np.uint8)
    write_idx(tmp_path / name, images)
    back = read_idx(tmp_path / name)
    np.testing.assert_array_equal(back, images)
    assert back.ctypes.data % hugepages.HUGE_PAGE == 0


def _train(threshold, monkeypatch, model, images, labels):
    monkeypatch.setattr(nb_module, "STAGE_MIN_SAMPLES", threshold)
    monkeypatch.setattr(nb_module, "STAGE_MIN_IMAGES", threshold)
    calls, original = [], hugepages.staged

    def recording(a, slot=0):
        calls.append((a.shape, slot))
        return original(a, slot)

    monkeypatch.setattr(hugepages, "staged", recording)
    opt = SGD(momentum=0.9, weight_decay=1e-4)
    backend = get_backend("numba")
    originals = [*model.weights, *model.biases]
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(len(images))
        backend.train_epoch(model, opt, images, labels, order, 32, np.full(10, 0.05))
    # Trained in place: the caller's arrays hold the result, staging or not.
    assert all(a is b for a, b in zip(originals, [*model.weights, *model.biases]))
    probs = backend.predict_proba(model, images)
    monkeypatch.undo()
    return model, opt, probs, calls


def test_staged_training_and_prediction_are_bit_identical_to_unstaged(monkeypatch):
    rng = np.random.default_rng(3)
    images = (rng.integers(1, 256, (300, 784)) * (rng.random((300, 784)) < 0.2)).astype(np.uint8)
    labels = rng.integers(0, 10, 300).astype(np.uint8)
    start = Model.initialize((24,), dtype="float64", rng=3)  # wider than the narrow kernels take
    staged = _train(1, monkeypatch, start.copy(), images, labels)
    plain = _train(10**9, monkeypatch, start.copy(), images, labels)
    # W0 and its velocity in both epochs, then W0 for the prediction; nothing unstaged.
    assert staged[3] == [((784, 24), 0), ((784, 24), 1)] * 2 + [((784, 24), 0)]
    assert plain[3] == []
    for a, b in zip([*staged[0].weights, *staged[0].biases, *staged[1].velocity_w, staged[2]],
                    [*plain[0].weights, *plain[0].biases, *plain[1].velocity_w, plain[2]]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(staged[0].weights[0], start.weights[0])  # it did train
