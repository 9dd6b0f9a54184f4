"""The trainer: drives epochs through the backend interface, never a specific backend."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backends import get_backend, resolve_backend_name
from ..backends.augment import EpochOptions
from ..errors import ConfigError, DivergenceError
from ..model import Model
from ..validation import check_images, check_labels
from .config import TrainConfig
from .history import History
from .schedules import make_schedule

#: A callback gets the epoch's record and the model; returning True stops training.
Callback = Callable[[dict[str, Any], Model], "bool | None"]


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, *, backend: str = "auto"):
    """Accuracy and mean cross-entropy of ``model`` on a labelled set.

    Returns
    -------
    accuracy : float
    loss : float
    """
    probs = get_backend(backend).predict_proba(model, images)
    y = labels.astype(np.intp)
    picked = probs[np.arange(len(y)), y].astype(np.float64)
    loss = float(-np.log(np.maximum(picked, np.finfo(np.float64).tiny)).mean())
    return float((probs.argmax(axis=1) == y).mean()), loss


class Trainer:
    """Mini-batch training of one model, one epoch at a time.

    One seeded ``numpy.random.Generator`` draws the initial weights and then one
    permutation per epoch, so every backend sees the same batches in the same order.

    Parameters
    ----------
    config : TrainConfig
        The settings; validated on construction.
    model : Model, optional
        Continue training this model instead of initialising a new one.
    progress : bool
        Show a progress bar on stderr.
    callbacks : sequence of callables
        Called after every epoch with the record and the model; returning True stops.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: Model | None = None,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.config = config
        self.backend_name = resolve_backend_name(config.backend)
        self.backend = get_backend(self.backend_name)
        self.rng = np.random.default_rng(config.seed)
        if model is None:
            model = Model.initialize(config.hidden, dtype=config.dtype, rng=self.rng)
        elif model.hidden != list(config.hidden) or model.dtype.name != config.dtype:
            raise ConfigError(
                f"the model is {model!r} but the settings ask for hidden={list(config.hidden)}, "
                f"dtype={config.dtype}"
            )
        self.model = model
        self.optimizer = config.make_optimizer()
        self.optimizer.init_state(model.weights, model.biases)
        self.schedule = make_schedule(
            config.schedule, config.lr, config.epochs, warmup_epochs=config.warmup_epochs
        )
        self.history = History()
        self.epoch = 0  # completed epochs
        self.progress = progress
        self.callbacks = list(callbacks)
        # Early stopping: (val accuracy, epoch, parameters) of the best epoch so far.
        self.best: tuple[float, int, list[np.ndarray]] | None = None
        self.bad_epochs = 0
        self.best_epoch: int | None = None
        self.compile_seconds = 0.0

    def fit(self, images: np.ndarray, labels: np.ndarray, test: tuple | None = None) -> History:
        """Train until ``config.epochs`` epochs are done (or a callback stops it).

        Parameters
        ----------
        images, labels : ndarray
            Training set: ``(n, 784)`` uint8 pixels and digits.
        test : (images, labels), optional
            Evaluated after every epoch (time reported separately).
        """
        images = check_images(images)
        if images.dtype != np.uint8:
            raise ConfigError("training images must be uint8 pixels")
        labels = check_labels(labels, len(images))
        if test is not None:
            test_images = check_images(test[0], name="test images")
            test = (test_images, check_labels(test[1], len(test_images), name="test labels"))
        images, labels, val = self._split_validation(images, labels)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.config.epochs,
            initial=self.epoch,
            unit="epoch",
            disable=not self.progress,
            file=sys.stderr,
            desc=f"train {self.backend_name}",
        )
        try:
            with self.backend.limit_threads(self.config.threads):
                t0 = time.perf_counter()
                self.backend.warmup(self.model, self.optimizer, self.config.batch_size,
                                    len(images), self._warmup_options())
                self.compile_seconds = time.perf_counter() - t0
                while self.epoch < self.config.epochs:
                    record = self.run_epoch(images, labels, test, val)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        acc=f"{(record['test_accuracy'] or record['train_accuracy']):.4f}",
                    )
                    if any(cb(record, self.model) for cb in self.callbacks):
                        break
                    if self.config.patience and self.bad_epochs >= self.config.patience:
                        break
            if self.best is not None:
                self._keep_best()
        finally:
            bar.close()
            self._sync_model()
        return self.history

    def _split_validation(self, images: np.ndarray, labels: np.ndarray):
        """Hold out ``config.validation`` of the training set, the same samples every time.

        The split comes from its own generator (seeded by the run's seed), so it
        neither consumes nor depends on the main generator's stream.
        """
        if not self.config.validation:
            return images, labels, None
        n_val = max(1, int(round(self.config.validation * len(images))))
        if n_val >= len(images):
            raise ConfigError("the validation split leaves no training samples")
        perm = np.random.default_rng([self.config.seed, 1]).permutation(len(images))
        val, kept = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        return images[kept], labels[kept], (images[val], labels[val])

    def _track_best(self, record: dict[str, Any]) -> None:
        if self.best is None or record["val_accuracy"] > self.best[0]:
            self.best = (record["val_accuracy"], self.epoch,
                         [p.copy() for p in self.model.parameters()])
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1

    def _keep_best(self) -> None:
        """Put the weights of the best validation epoch into the model."""
        assert self.best is not None
        for dst, src in zip(self.model.parameters(), self.best[2]):
            dst[...] = src
        self.best_epoch = self.best[1]

    def _warmup_options(self) -> EpochOptions:
        """Which regularisation the epochs use, without drawing from the generator
        (a warm-up must not change what training draws)."""
        c = self.config
        shifts = np.zeros((1, 2), dtype=np.int8) if c.augment else None
        return EpochOptions(dropout=c.dropout, label_smoothing=c.label_smoothing, shifts=shifts)

    def epoch_options(self, n: int) -> EpochOptions:
        """This epoch's regularisation; augmentation and dropout draw from the generator."""
        c = self.config
        shifts = None
        if c.augment:
            shifts = self.rng.integers(-c.augment, c.augment + 1, size=(n, 2), dtype=np.int8)
        seed = int(self.rng.integers(2**63)) if c.dropout else 0
        return EpochOptions(dropout=c.dropout, label_smoothing=c.label_smoothing,
                            shifts=shifts, seed=seed)

    def run_epoch(
        self, images: np.ndarray, labels: np.ndarray, test: tuple | None, val: tuple | None = None
    ) -> dict:
        """Train one epoch, check it stayed finite, evaluate, and record it.

        All or nothing: if anything stops it before its record is kept (a
        divergence, Ctrl-C wherever it lands), every change it made is undone.
        """
        # Everything an epoch changes is snapshot first and restored on any exit
        # without a record. Ctrl-C is why the whole epoch is covered, not just
        # the kernel call: landing after the permutation was drawn, or after the
        # kernel returned, it left an advanced generator or trained weights
        # beside the previous epoch count, and the checkpoint resumed into a
        # different run.
        snapshot = self._snapshot()
        try:
            return self._train_and_record(images, labels, test, val)
        except BaseException:
            self._restore(snapshot)
            raise

    def _train_and_record(
        self, images: np.ndarray, labels: np.ndarray, test: tuple | None, val: tuple | None
    ) -> dict:
        n, bs = len(images), self.config.batch_size
        steps = math.ceil(n / bs)
        order = self.rng.permutation(n)
        options = self.epoch_options(n)
        lrs = self.schedule.epoch_lrs(self.epoch, steps)
        t0 = time.perf_counter()
        result = self.backend.train_epoch(
            self.model, self.optimizer, images, labels, order, bs, lrs, options
        )
        seconds = time.perf_counter() - t0
        if not (math.isfinite(result.loss_sum) and self.model.is_finite()):
            raise DivergenceError(
                f"training diverged in epoch {self.epoch + 1} (loss {result.mean_loss:.4g}); "
                f"the model keeps the weights of the last finite epoch. "
                f"Try a lower learning rate than {self.config.lr:g}."
            )
        self.epoch += 1
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "loss": result.mean_loss,
            "train_accuracy": result.accuracy,
            "test_accuracy": None,
            "test_loss": None,
            "val_accuracy": None,
            "lr": float(lrs[0]),
            "seconds": seconds,
            "eval_seconds": 0.0,
            "samples_per_second": n / seconds if seconds > 0 else float("inf"),
        }
        t1 = time.perf_counter()
        if test is not None:
            acc, loss = evaluate(self.model, *test, backend=self.backend_name)
            record.update(test_accuracy=acc, test_loss=loss)
        if val is not None:
            record["val_accuracy"] = evaluate(self.model, *val, backend=self.backend_name)[0]
            self._track_best(record)
        record["eval_seconds"] = time.perf_counter() - t1
        self.history.append(record)  # the last step: from here on the epoch counts
        return record

    def _snapshot(self) -> dict[str, Any]:
        return {
            "params": [p.copy() for p in self.model.parameters()],
            "state": [a.copy() for a in self.optimizer.state_arrays()],
            "step": self.optimizer.step,
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "n_records": len(self.history.records),
            "best": self.best,  # replaced, never changed in place
            "bad_epochs": self.bad_epochs,
        }

    def _restore(self, snapshot: dict[str, Any]) -> None:
        for dst, src in zip(self.model.parameters(), snapshot["params"]):
            dst[...] = src
        for dst, src in zip(self.optimizer.state_arrays(), snapshot["state"]):
            dst[...] = src
        self.optimizer.step = snapshot["step"]
        self.rng.bit_generator.state = snapshot["rng"]
        self.epoch = snapshot["epoch"]
        del self.history.records[snapshot["n_records"]:]
        self.best, self.bad_epochs = snapshot["best"], snapshot["bad_epochs"]
        self._sync_model()

    def _sync_model(self) -> None:
        """Copy the run's record onto the model, so a saved model carries it."""
        self.model.history = self.history.to_list()
        self.model.config = self.config.to_dict() | {"backend": self.backend_name}


def train(
    data: Any,
    *,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    model: Model | None = None,
    **settings: Any,
) -> tuple[Model, History]:
    """Train an MLP on a dataset and return the model and its history.

    Parameters
    ----------
    data : Dataset
        Anything with ``.train`` (and optionally ``.test``) splits holding
        ``images`` and ``labels``, such as :func:`fastmnist.load_dataset` returns.
    progress : bool
        Show a progress bar on stderr.
    callbacks : sequence of callables
        ``callback(record, model)`` after every epoch; returning True stops training.
    model : Model, optional
        Continue training this model.
    **settings
        Any field of :class:`~fastmnist.train.TrainConfig`: ``hidden``, ``epochs``,
        ``batch_size``, ``lr``, ``momentum``, ``nesterov``, ``weight_decay``,
        ``schedule``, ``seed``, ``dtype``, ``backend``, ``threads``.

    Returns
    -------
    model : Model
    history : History

    Examples
    --------
    >>> data = fastmnist.load_dataset("mnist")                     # doctest: +SKIP
    >>> model, history = fastmnist.train(data, hidden=(128,), epochs=5, seed=0)  # doctest: +SKIP
    """
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__) - {"extra"}
    if unknown:
        raise ConfigError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    config = TrainConfig(**settings)
    trainer = Trainer(config, model=model, progress=progress, callbacks=callbacks)
    test = getattr(data, "test", None)
    trainer.fit(
        data.train.images,
        data.train.labels,
        None if test is None else (test.images, test.labels),
    )
    trainer.model.dataset = getattr(data, "name", None)
    return trainer.model, trainer.history
