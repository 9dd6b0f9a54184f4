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
from .optim import SGD
from .train import History, train

__version__ = "0.1.0"

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
    "Model",
    "ModelFileError",
    "Split",
    "__version__",
    "available_backends",
    "get_backend",
    "load_dataset",
    "train",
]
