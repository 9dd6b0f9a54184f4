"""The one interface every backend implements.

The unit of work is an epoch: the trainer hands a backend the whole data set,
a permutation and one learning rate per step, and the backend runs every
mini-batch (forward, backward, update) however it likes, in place. Step-level
methods exist so the backends can be tested against each other tensor by tensor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..model import Model
from ..optim import SGD, Optimizer
from .augment import EpochOptions


@dataclass(frozen=True)
class EpochResult:
    """What one epoch measured while it trained.

    ``loss_sum`` and ``correct`` come from each mini-batch's forward pass, before
    that batch's update, as every mini-batch trainer reports them.
    """

    loss_sum: float
    correct: int
    n_samples: int

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.n_samples, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.n_samples, 1)


@dataclass(frozen=True)
class Gradients:
    """Loss, probabilities and the gradient of every parameter for one batch."""

    loss: float
    probs: np.ndarray  # (B, 10)
    weights: list[np.ndarray]  # grads of model.weights, same shapes
    biases: list[np.ndarray]  # grads of model.biases, same shapes


@runtime_checkable
class Backend(Protocol):
    """What the trainer, the benchmarks and the interfaces may ask of a backend.

    Images are always ``(n, 784)`` C-contiguous; uint8 pixels are scaled by
    :func:`fastmnist.numerics.pixel_scale` inside the backend, floats are taken
    as already scaled. Labels are uint8 in 0-9.
    """

    name: str
    #: Seconds the worker threads this backend uses may keep spinning after a
    #: call returns; a benchmark idles this long before timing another backend.
    spin_seconds: float

    def predict_proba(self, model: Model, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities, ``(n, 10)`` in the model's dtype."""
        ...

    def forward(self, model: Model, images: np.ndarray) -> list[np.ndarray]:
        """Activations of every layer: ``[X, A1, ..., probs]`` (X scaled)."""
        ...

    def gradients(self, model: Model, images: np.ndarray, labels: np.ndarray) -> Gradients:
        """Mean cross-entropy over the batch and its gradients."""
        ...

    def train_epoch(
        self,
        model: Model,
        optimizer: Optimizer,
        images: np.ndarray,
        labels: np.ndarray,
        order: np.ndarray,
        batch_size: int,
        lrs: np.ndarray,
        options: EpochOptions | None = None,
    ) -> EpochResult:
        """Train one epoch in place.

        Step ``s`` uses the samples ``order[s * batch_size:(s + 1) * batch_size]``
        (the last batch may be partial) and learning rate ``lrs[s]``;
        ``len(lrs) == ceil(len(order) / batch_size)``. ``options`` adds dropout,
        label smoothing and translations; a backend that cannot honour an
        option or optimizer raises :class:`~fastmnist.errors.ConfigError`.
        """
        ...

    def warmup(
        self, model: Model, optimizer: Optimizer, batch_size: int, n_samples: int | None = None,
        options: EpochOptions | None = None,
    ) -> None:
        """Do any one-off work (JIT compilation) for this configuration.

        ``n_samples`` is the epoch's length, for backends whose compiled programs
        depend on it; ``options`` says which regularisation the epochs will use
        (its values do not matter, only which options are active).
        """
        ...

    def limit_threads(self, threads: int | None) -> contextlib.AbstractContextManager[None]:
        """A context in which the backend computes on at most ``threads`` threads."""
        ...


class BackendBase:
    """Defaults shared by the concrete backends."""

    name = "base"
    # OpenMP pools (Numba's, torch's) and XLA's spin for well under this.
    spin_seconds = 0.3

    def warmup(
        self, model: Model, optimizer: Optimizer, batch_size: int, n_samples: int | None = None,
        options: EpochOptions | None = None,
    ) -> None:
        return None

    def _require_plain_sgd(self, optimizer: Optimizer, options: EpochOptions | None) -> None:
        """For peers that implement only what they are compared on: plain SGD."""
        if not isinstance(optimizer, SGD):
            raise ConfigError(f"the {self.name} backend supports only the SGD optimizer")
        if options is not None and options.active:
            raise ConfigError(
                f"the {self.name} backend does not support dropout, label smoothing or "
                f"augmentation; use the numba or numpy backend"
            )

    @contextlib.contextmanager
    def limit_threads(self, threads: int | None) -> Iterator[None]:
        # BLAS is what NumPy-based code threads through.
        if threads is None:
            yield
            return
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=int(threads)):
            yield


class ConvertedArrays:
    """Arrays a backend has already converted (to tensors, to the device), by identity.

    Peers convert the training set once and reuse it every epoch. Each entry
    holds a reference to its source array, so the ``id`` in the key cannot be
    reused by another array while the entry lives. Arrays changed in place after
    conversion are not noticed: training data is treated as read-only.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: dict[tuple, tuple[np.ndarray, Any]] = {}

    def get(self, array: np.ndarray, tag: str, convert: Callable[[np.ndarray], Any]) -> Any:
        key = (id(array), array.shape, array.dtype.str, tag)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is array:
            return hit[1]
        if len(self._entries) >= self.size:
            # Oldest first: a benchmark cycles through few data sets, a trainer one.
            self._entries.pop(next(iter(self._entries)))
        value = convert(array)
        self._entries[key] = (array, value)
        return value


@contextlib.contextmanager
def scoped_threads(
    get: Callable[[], int], set_: Callable[[int], None], threads: int | None
) -> Iterator[None]:
    """Set a library's thread count for the block and restore it after (None: no change)."""
    if threads is None:
        yield
        return
    before = get()
    set_(int(threads))
    try:
        yield
    finally:
        set_(before)
