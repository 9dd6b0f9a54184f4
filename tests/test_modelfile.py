"""Saving and loading models: round trips, atomic writes, and every kind of bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fastmnist
from fastmnist import Model, ModelFileError, available_backends, load_model
from fastmnist.modelfile import load_model_and_extra

from .synthetic import blobs, tiny_dataset


@pytest.fixture(scope="module")
def trained():
    model, _ = fastmnist.train(
        tiny_dataset(), hidden=(16, 8), epochs=2, backend="numpy", progress=False
    )
    return model


@pytest.mark.parametrize("backend", [b for b in ("numpy", "numba") if b in available_backends()])
def test_round_trip_predicts_exactly_as_before(tmp_path, trained, backend):
    path = trained.save(tmp_path / "m.npz")
    loaded = load_model(path)
    x, _ = blobs(64, seed=5)
    assert loaded.sizes == trained.sizes and loaded.dtype == trained.dtype
    assert loaded.history == trained.history and loaded.config == trained.config
    assert loaded.dataset == "synthetic"
    np.testing.assert_array_equal(
        loaded.predict_proba(x, backend=backend), trained.predict_proba(x, backend=backend)
    )


def test_float64_models_round_trip(tmp_path):
    model = Model.initialize((5,), dtype="float64", rng=1)
    loaded = load_model(model.save(tmp_path / "m.npz"))
    assert loaded.dtype == np.float64
    for a, b in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(a, b)


def test_interrupted_save_keeps_the_old_file(tmp_path, trained, monkeypatch):
    path = trained.save(tmp_path / "m.npz")
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        Model.initialize((3,), rng=0).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temp file left


def test_a_diverged_model_is_never_saved(tmp_path):
    model = Model.initialize((4,), rng=0)
    model.weights[0][0, 0] = np.nan
    with pytest.raises(ModelFileError, match="NaN"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def _arrays(model: Model) -> dict:
    path_arrays = {
        "format": np.array("fastmnist-model"),
        "format_version": np.array(1),
        "sizes": np.array(model.sizes),
        "dtype": np.array(model.dtype.name),
        "config": np.array("{}"),
        "history": np.array("[]"),
        "dataset": np.array(json.dumps(None)),
    }
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        path_arrays[f"W{i}"], path_arrays[f"b{i}"] = w, b
    return path_arrays


def _variants():
    m = Model.initialize((4,), rng=0)
    good = _arrays(m)
    yield "no fastmnist format marker", {k: v for k, v in good.items() if k != "format"}
    yield "format marker", {**good, "format": np.array("something-else")}
    yield "missing array W1", {k: v for k, v in good.items() if k != "W1"}
    yield "W0 is float32\\[784, 5\\]", {**good, "W0": np.zeros((784, 5), np.float32)}
    yield "W0 is float64", {**good, "W0": good["W0"].astype(np.float64)}
    yield "do not run from 784", {**good, "sizes": np.array([100, 4, 10])}
    yield "implausibly large", {**good, "sizes": np.array([784, 10**9, 10])}
    yield "unsupported dtype", {**good, "dtype": np.array("float16")}
    yield "NaN", {**good, "b0": np.full(4, np.nan, np.float32)}
    yield "not valid JSON", {**good, "config": np.array("{oops")}
    yield "pickle", {**good, "config": np.array([{"a": 1}], dtype=object)}


@pytest.mark.parametrize("problem, arrays", list(_variants()), ids=lambda v: str(v)[:30])
def test_bad_model_files_are_refused_with_the_problem_named(tmp_path, problem, arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=problem):
        load_model(path)


def test_files_that_are_not_npz_or_are_truncated(tmp_path, trained):
    good = trained.save(tmp_path / "good.npz").read_bytes()
    cases = {
        "text.npz": b"hello, I am not a model",
        "empty.npz": b"",
        "truncated.npz": good[: len(good) // 2],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match=name):
            load_model(tmp_path / name)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.npz")


def test_extra_arrays_round_trip(tmp_path):
    from fastmnist.modelfile import save_model

    model = Model.initialize((3,), rng=0)
    save_model(model, tmp_path / "c.npz", extra={"epoch": np.array(4)})
    _, extra = load_model_and_extra(tmp_path / "c.npz")
    assert int(extra["epoch"]) == 4
