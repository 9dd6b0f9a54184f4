"""The network's parameters: layer sizes, weights, biases and their dtype.

A :class:`Model` is plain arrays. Computation lives in the backends; the
``predict`` methods here only look a backend up and hand it the arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .numerics import N_CLASSES, N_PIXELS, resolve_dtype


def layer_sizes(hidden: Sequence[int] | int) -> list[int]:
    """Return ``[784, *hidden, 10]`` after checking every hidden width is a positive int."""
    if isinstance(hidden, (int, np.integer)):
        hidden = [int(hidden)]
    hidden = list(hidden)
    for h in hidden:
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise ConfigError(f"hidden layer sizes must be integers >= 1, got {hidden!r}")
    return [N_PIXELS, *(int(h) for h in hidden), N_CLASSES]


class Model:
    """A multilayer perceptron ``784 -> hidden... -> 10`` with ReLU and softmax.

    Parameters
    ----------
    weights : list of ndarray
        ``weights[l]`` is ``(sizes[l], sizes[l + 1])``: inputs times weights, so a
        row holds the fan-out of one input unit.
    biases : list of ndarray
        ``biases[l]`` is ``(sizes[l + 1],)``.

    Attributes
    ----------
    sizes : list of int
        Layer widths, input first.
    dtype : numpy.dtype
        The dtype of every parameter.
    history : list of dict
        Per-epoch records of the training that produced the model.
    config : dict
        The training settings that produced the model.
    dataset : str or None
        The dataset the model was trained on.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        if len(weights) != len(biases) or not weights:
            raise ConfigError("a model needs one bias vector per weight matrix")
        self.weights = weights
        self.biases = biases
        self.history: list[dict[str, Any]] = []
        self.config: dict[str, Any] = {}
        self.dataset: str | None = None

    @classmethod
    def initialize(
        cls,
        hidden: Sequence[int] | int = (128,),
        *,
        dtype: str | np.dtype = "float32",
        rng: np.random.Generator | int | None = 0,
    ) -> Model:
        """He-initialise a new model.

        Weights are drawn from ``N(0, 2 / fan_in)`` in float64 and then cast, so the
        float32 and float64 models of one seed start from the same numbers; biases
        start at zero.

        Parameters
        ----------
        hidden : sequence of int or int
            Hidden layer widths.
        dtype : {"float32", "float64"}
            Parameter dtype.
        rng : numpy.random.Generator or int or None
            The generator (or a seed for one) the weights are drawn from.
        """
        sizes = layer_sizes(hidden)
        dt = resolve_dtype(dtype)
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            weights.append(np.ascontiguousarray(w, dtype=dt))
            biases.append(np.zeros(fan_out, dtype=dt))
        return cls(weights, biases)

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[0], *(w.shape[1] for w in self.weights)]

    @property
    def hidden(self) -> list[int]:
        return self.sizes[1:-1]

    @property
    def dtype(self) -> np.dtype:
        return self.weights[0].dtype

    def copy(self) -> Model:
        """A deep copy of the parameters and metadata."""
        other = Model([w.copy() for w in self.weights], [b.copy() for b in self.biases])
        other.history = [dict(h) for h in self.history]
        other.config = dict(self.config)
        other.dataset = self.dataset
        return other

    def parameters(self) -> list[np.ndarray]:
        """Weights and biases interleaved: ``[W0, b0, W1, b1, ...]``."""
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def is_finite(self) -> bool:
        """True when no parameter holds a NaN or an infinity."""
        return all(np.isfinite(p).all() for p in self.parameters())

    def predict_proba(self, images: np.ndarray, *, backend: str = "auto") -> np.ndarray:
        """Class probabilities, ``(n, 10)``, for uint8 images or floats scaled to [0, 1].

        Parameters
        ----------
        images : ndarray
            ``(n, 784)`` or ``(n, 28, 28)``; uint8 pixels or floats in [0, 1].
        backend : str
            Backend name, see :func:`fastmnist.available_backends`.
        """
        from .backends import get_backend  # the model layer sits below the backends
        from .validation import check_images

        return get_backend(backend).predict_proba(self, check_images(images))

    def predict(self, images: np.ndarray, *, backend: str = "auto") -> np.ndarray:
        """Predicted digit for each image, as an int64 array ``(n,)``."""
        return self.predict_proba(images, backend=backend).argmax(axis=1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to a ``.npz`` file atomically; see :func:`fastmnist.load_model`."""
        from .modelfile import save_model

        return save_model(self, path)

    def __repr__(self) -> str:
        return f"Model(sizes={self.sizes}, dtype={self.dtype.name})"
