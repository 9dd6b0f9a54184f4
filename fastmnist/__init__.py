"""fastmnist: train multilayer perceptrons on MNIST-shaped data, fast, on the CPU.

The public API::

    data = fastmnist.load_dataset("mnist")
    model, history = fastmnist.train(data, hidden=(128,), epochs=5, seed=0)
    model.predict(data.test.images[:10])
"""

from __future__ import annotations

from .backends import available_backends, get_backend
from .data import Dataset, Split, load_dataset
from .errors import (
    BackendUnavailableError,
    ConfigError,
    DataError,
    DataNotFoundError,
    DivergenceError,
    FastMnistError,
    InputError,
    ModelFileError,
)
from .model import Model
from .modelfile import load_model
from .optim import SGD
from .train import History, train

__version__ = "0.1.0"


def __getattr__(name: str):
    # The estimator imports scikit-learn when present, which is slow: only on demand.
    if name == "MLPClassifier":
        from .estimator import MLPClassifier

        return MLPClassifier
    raise AttributeError(f"module 'fastmnist' has no attribute {name!r}")


__all__ = [
    "SGD",
    "BackendUnavailableError",
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "Dataset",
    "DivergenceError",
    "FastMnistError",
    "History",
    "InputError",
    "MLPClassifier",
    "Model",
    "ModelFileError",
    "Split",
    "__version__",
    "available_backends",
    "get_backend",
    "load_dataset",
    "load_model",
    "train",
]
