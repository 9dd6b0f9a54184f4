"""A scikit-learn-style estimator over the trainer.

scikit-learn is not a dependency. When it is installed, :class:`MLPClassifier`
derives from its ``BaseEstimator`` and ``ClassifierMixin`` so that ``clone``,
``Pipeline``, ``cross_val_score`` and the HTML repr work as for any estimator;
without it, a small base class provides the same ``get_params``/``set_params``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import FastMnistError, InputError
from .model import Model
from .numerics import N_CLASSES
from .train import TrainConfig, Trainer
from .validation import check_images

try:  # pragma: no cover - which branch runs depends on the environment
    from sklearn.base import BaseEstimator as _SkBase
    from sklearn.base import ClassifierMixin as _SkClassifier
    from sklearn.exceptions import NotFittedError as _SkNotFitted

    _BASES: tuple[type, ...] = (_SkClassifier, _SkBase)
except ImportError:  # pragma: no cover
    _SkNotFitted = None
    _BASES = ()


class _ParamsBase:
    """``get_params``/``set_params`` from the ``__init__`` signature, as scikit-learn does."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> _ParamsBase:
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}")
            setattr(self, name, value)
        return self

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        pred = self.predict(X)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        return float(np.average(pred == np.asarray(y), weights=weights))


NotFittedError: type[Exception]
if _SkNotFitted is not None:
    class NotFittedError(FastMnistError, _SkNotFitted):  # type: ignore[no-redef]
        """The estimator is used before ``fit``."""
else:
    class NotFittedError(FastMnistError, ValueError, AttributeError):  # type: ignore[no-redef]
        """The estimator is used before ``fit``."""


class MLPClassifier(*_BASES, _ParamsBase):  # type: ignore[misc]
    """Multilayer perceptron classifier for 784-pixel images, scikit-learn style.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Hidden layer widths.
    backend : str
        ``"auto"`` (numba when installed), ``"numpy"``, ``"numba"``, ``"torch"``, ``"jax"``.
    batch_size : int
        Samples per step.
    learning_rate_init : float
        Peak learning rate.
    max_iter : int
        Epochs run by :meth:`fit`.
    momentum : float
        SGD momentum in [0, 1).
    nesterovs_momentum : bool
        Nesterov momentum.
    alpha : float
        L2 weight decay on the weight matrices.
    learning_rate : {"cosine", "constant", "step"}
        Schedule used by :meth:`fit`; :meth:`partial_fit` always uses a constant rate.
    dtype : {"float32", "float64"}
        Arithmetic dtype.
    random_state : int or None
        Seed; None draws a fresh one at each ``fit``.
    threads : int or None
        Backend threads; None uses all cores.
    verbose : bool
        Show a progress bar on stderr.

    Attributes
    ----------
    classes_ : ndarray
        The labels seen by ``fit`` (at most 10), in sorted order.
    model_ : Model
        The trained parameters.
    coefs_, intercepts_ : list of ndarray
        Weight matrices ``(n_in, n_out)`` and bias vectors.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Always 784.

    Notes
    -----
    ``X`` is ``(n, 784)``: uint8 pixels, or floats already scaled to [0, 1]. Training
    reads uint8 images, so float inputs are rounded to the nearest 1/255 for
    training (exact for data that came from uint8 pixels); prediction uses the
    floats as given.
    """

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (128,),
        backend: str = "auto",
        batch_size: int = 64,
        learning_rate_init: float = 0.05,
        max_iter: int = 10,
        momentum: float = 0.9,
        nesterovs_momentum: bool = False,
        alpha: float = 0.0,
        learning_rate: str = "cosine",
        dtype: str = "float32",
        random_state: int | None = None,
        threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.backend = backend
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.dtype = dtype
        self.random_state = random_state
        self.threads = threads
        self.verbose = verbose

    # -- helpers -------------------------------------------------------------------

    def _config(self, *, schedule: str | None = None, seed: int) -> TrainConfig:
        return TrainConfig(
            hidden=tuple(self.hidden_layer_sizes),
            epochs=self.max_iter,
            batch_size=self.batch_size,
            lr=self.learning_rate_init,
            momentum=self.momentum,
            nesterov=self.nesterovs_momentum,
            weight_decay=self.alpha,
            schedule=schedule or self.learning_rate,
            seed=seed,
            dtype=self.dtype,
            backend=self.backend,
            threads=self.threads,
        )

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**31))
        if isinstance(self.random_state, (int, np.integer)) and self.random_state >= 0:
            return int(self.random_state)
        raise InputError(f"random_state must be None or an int >= 0, got {self.random_state!r}")

    @staticmethod
    def _training_pixels(X: Any) -> np.ndarray:
        images = check_images(X, name="X")
        if images.dtype != np.uint8:
            images = np.rint(images * 255.0).astype(np.uint8)
        return images

    def _encode(self, y: Any, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise InputError(f"y must be one label per row of X ({n}), got shape {y.shape}")
        index = np.searchsorted(self.classes_, y)
        index = np.clip(index, 0, len(self.classes_) - 1)
        if not np.array_equal(self.classes_[index], y):
            unknown = sorted(set(y.tolist()) - set(self.classes_.tolist()))[:5]
            raise InputError(f"y holds labels not in classes_: {unknown}")
        return index.astype(np.uint8)

    def _set_classes(self, classes: Any) -> None:
        classes = np.unique(np.asarray(classes))
        if len(classes) > N_CLASSES:
            raise InputError(f"at most {N_CLASSES} classes are supported, got {len(classes)}")
        if len(classes) < 2:
            raise InputError("y needs at least two classes")
        self.classes_ = classes

    def _publish(self) -> None:
        model = self._trainer.model
        self.model_ = model
        self.coefs_ = model.weights
        self.intercepts_ = model.biases
        self.loss_curve_ = [float(r["loss"]) for r in self._trainer.history]
        self.n_iter_ = len(self._trainer.history)
        self.n_features_in_ = model.sizes[0]

    def _check_fitted(self) -> Model:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit or partial_fit first"
            )
        return self.model_

    # -- the estimator API ---------------------------------------------------------

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train from scratch for ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like, (n, 784)
            uint8 pixels or floats in [0, 1].
        y : array-like, (n,)
            Labels, any values (at most 10 distinct).
        """
        images = self._training_pixels(X)
        self._set_classes(y)
        labels = self._encode(y, len(images))
        self._trainer = Trainer(self._config(seed=self._seed()), progress=self.verbose)
        self._trainer.fit(images, labels)
        self._publish()
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """Train one epoch over ``(X, y)`` at a constant learning rate.

        Parameters
        ----------
        classes : array-like, optional
            Every label that will ever be passed; required on the first call.
        """
        images = self._training_pixels(X)
        if not hasattr(self, "_trainer"):
            if classes is None:
                raise InputError("the first call to partial_fit needs classes=")
            self._set_classes(classes)
            self._trainer = Trainer(
                self._config(schedule="constant", seed=self._seed()), progress=False
            )
        labels = self._encode(y, len(images))
        trainer = self._trainer
        with trainer.backend.limit_threads(trainer.config.threads):
            trainer.run_epoch(images, labels, None)
        self._publish()
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(n, len(classes_))``, columns in the order of ``classes_``."""
        model = self._check_fitted()
        probs = model.predict_proba(check_images(X, name="X"), backend=self.backend)
        probs = probs[:, : len(self.classes_)].astype(np.float64)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each row of ``X``."""
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on ``(X, y)``."""
        return _ParamsBase.score(self, X, y, sample_weight)
