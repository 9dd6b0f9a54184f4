"""The trainer, its schedules and settings, on small synthetic data and on real MNIST."""

from __future__ import annotations

import numpy as np
import pytest

import fastmnist
from fastmnist import ConfigError, DivergenceError, Model, get_backend
from fastmnist.optim import SGD
from fastmnist.train import TrainConfig, Trainer, make_schedule

from .synthetic import blobs, tiny_dataset

FAST = dict(hidden=(32,), epochs=3, batch_size=32, lr=0.05, backend="numpy", seed=0)


def test_loss_decreases_and_synthetic_data_is_learned():
    model, history = fastmnist.train(tiny_dataset(), progress=False, **FAST)
    losses = history["loss"]
    assert losses[-1] < losses[0]
    assert history[-1]["test_accuracy"] > 0.9
    assert set(fastmnist.History.KEYS) <= set(history[-1])
    assert model.config["backend"] == "numpy" and model.dataset == "synthetic"


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not():
    data = tiny_dataset()
    a, _ = fastmnist.train(data, progress=False, **FAST)
    b, _ = fastmnist.train(data, progress=False, **FAST)
    c, _ = fastmnist.train(data, progress=False, **{**FAST, "seed": 1})
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert np.array_equal(pa, pb)
    assert not np.array_equal(a.weights[0], c.weights[0])


def test_last_partial_batch_is_trained_on():
    x, y = blobs(50)
    backend = get_backend("numpy")
    whole, steps = Model.initialize((8,), dtype="float64", rng=0), Model.initialize(
        (8,), dtype="float64", rng=0
    )
    order = np.random.default_rng(0).permutation(50)
    lrs = np.array([0.1, 0.09, 0.08, 0.07])
    backend.train_epoch(whole, SGD(momentum=0.0), x, y, order, 16, lrs)
    for s in range(4):
        part = order[16 * s : 16 * (s + 1)]
        backend.train_epoch(steps, SGD(momentum=0.0), x, y, part, 16, lrs[s : s + 1])
    assert len(order[48:]) == 2
    for p, q in zip(whole.parameters(), steps.parameters()):
        np.testing.assert_array_equal(p, q)


def test_callback_can_stop_training():
    seen = []

    def stop_after_two(record, model):
        seen.append(record["epoch"])
        return record["epoch"] == 2

    _, history = fastmnist.train(
        tiny_dataset(), progress=False, callbacks=[stop_after_two], **{**FAST, "epochs": 5}
    )
    assert seen == [1, 2] and len(history) == 2


def test_divergence_stops_with_a_clear_error_and_finite_weights():
    data = tiny_dataset()
    trainer = Trainer(
        TrainConfig(**{**FAST, "lr": 1e30, "momentum": 0.0}), progress=False
    )
    with pytest.raises(DivergenceError, match="lower learning rate"):
        trainer.fit(data.train.images, data.train.labels)
    assert trainer.model.is_finite()


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"hidden": (0,)},
        {"momentum": 1.0},
        {"schedule": "bogus"},
        {"dtype": "float16"},
        {"backend": "bogus"},
        {"threads": 0},
        {"seed": -1},
        {"colour": "blue"},
    ],
)
def test_bad_settings_are_rejected_before_any_work(bad):
    with pytest.raises(ConfigError):
        fastmnist.train(tiny_dataset(), progress=False, **{**FAST, **bad})


def test_schedules():
    cosine = make_schedule("cosine", 0.1, epochs=2)
    lrs = np.concatenate([cosine.epoch_lrs(0, 10), cosine.epoch_lrs(1, 10)])
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.01
    assert np.all(np.diff(lrs) <= 0)
    step = make_schedule("step", 0.1, epochs=6)
    assert [step.lr_at(e, 0, 1) for e in range(6)] == pytest.approx(
        [0.1, 0.1, 0.02, 0.02, 0.004, 0.004]
    )
    assert set(make_schedule("constant", 0.3, 4).epoch_lrs(3, 5)) == {0.3}


@pytest.mark.mnist
def test_one_epoch_on_real_mnist_reaches_90_percent(mnist):
    _, history = fastmnist.train(
        mnist, hidden=(128,), epochs=1, batch_size=64, backend="numpy", progress=False
    )
    assert history[-1]["test_accuracy"] >= 0.90


def test_regularised_training_is_reproducible_and_learns():
    # augment=1: the synthetic classes are bands 2 rows apart, so 2-pixel shifts blur them.
    settings = {**FAST, "epochs": 3, "dropout": 0.2, "label_smoothing": 0.1, "augment": 1,
                "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01, "warmup_epochs": 1}
    a, history = fastmnist.train(tiny_dataset(), progress=False, **settings)
    b, _ = fastmnist.train(tiny_dataset(), progress=False, **settings)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa, pb)
    assert history[-1]["test_accuracy"] > 0.85
    plain, _ = fastmnist.train(tiny_dataset(), progress=False, **{**settings, "dropout": 0.0})
    assert not np.array_equal(plain.weights[0], a.weights[0])  # dropout did something


def test_validation_split_and_early_stopping_keep_the_best_epoch():
    data = tiny_dataset()
    seen = []
    trainer = Trainer(TrainConfig(**{**FAST, "epochs": 30, "lr": 0.5, "validation": 0.2,
                                     "patience": 2, "schedule": "constant"}),
                      progress=False, callbacks=[lambda r, m: seen.append(
                          [p.copy() for p in m.parameters()]) and False])
    history = trainer.fit(data.train.images, data.train.labels)
    val = history["val_accuracy"]
    assert all(v is not None for v in val)
    best = int(np.argmax(val))  # first epoch with the highest accuracy
    assert len(history) < 30 and len(history) - 1 - best == 2  # stopped 2 epochs after it
    for kept, then in zip(trainer.model.parameters(), seen[best]):
        np.testing.assert_array_equal(kept, then)
    assert trainer.best_epoch == best + 1
    with pytest.raises(ConfigError, match="validation"):
        TrainConfig(patience=3)


def test_warmup_is_told_the_regularisation_without_drawing_from_the_generator(monkeypatch):
    data = tiny_dataset()
    seen = []
    config = TrainConfig(hidden=(8,), epochs=1, batch_size=32, dropout=0.1, augment=1,
                         label_smoothing=0.1, backend="numpy")
    trainer = Trainer(config, progress=False)
    monkeypatch.setattr(trainer.backend, "warmup",
                        lambda *args, **kw: seen.append(args[4] if len(args) > 4 else kw))
    trainer.fit(data.train.images, data.train.labels)
    (options,) = seen
    assert options.dropout == 0.1 and options.label_smoothing == 0.1
    assert options.shifts is not None
    # The same run without the warm-up hook draws the same numbers: same weights.
    plain = Trainer(config, progress=False)
    plain.fit(data.train.images, data.train.labels)
    for a, b in zip(trainer.model.parameters(), plain.model.parameters()):
        np.testing.assert_array_equal(a, b)
