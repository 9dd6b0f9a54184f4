"""Training-time randomness that every backend must reproduce bit for bit.

Dropout masks come from a counter-based hash of (epoch seed, position in the
epoch, layer, unit), not from a stateful generator, so a fused kernel can make
any sample's mask on any thread and still agree with the reference exactly.
Translations are drawn by the trainer, one (dy, dx) per sample, and passed in.
The functions here are plain NumPy on uint64 and also compile under Numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_POSITION = np.uint64(0xD6E8FEB86659FD93)
_LAYER = np.uint64(0xA0761D6478BD642F)
#: Dropout compares 24 hash bits against ``round(rate * 2**24)``: integers, so exact.
DROPOUT_BITS = 24


def splitmix64(x):
    """SplitMix64's finaliser: a well-mixed 64-bit hash of a uint64 (array or scalar)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def dropout_threshold(rate: float) -> int:
    """Hash values (top 24 bits) below this are dropped."""
    return int(round(rate * (1 << DROPOUT_BITS)))


def dropout_keep(seed: int, positions: np.ndarray, layer: int, width: int,
                 threshold: int) -> np.ndarray:
    """Keep-mask ``(len(positions), width)`` for hidden layer ``layer`` (0-based)."""
    base = (np.uint64(seed) + positions.astype(np.uint64)[:, None] * _POSITION
            + np.uint64(layer) * _LAYER)
    h = splitmix64(base + np.arange(width, dtype=np.uint64)[None, :])
    return (h >> np.uint64(64 - DROPOUT_BITS)) >= np.uint64(threshold)


def shift_images(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Translate each 28x28 image by its ``(dy, dx)``, filling with zeros.

    ``images`` is ``(B, 784)`` (any dtype), ``shifts`` ``(B, 2)`` integers; pixel
    ``(r, c)`` of the result is pixel ``(r - dy, c - dx)`` of the input.
    """
    b = len(images)
    src = images.reshape(b, 28, 28)
    out = np.zeros_like(src)
    for i in range(b):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i, max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
            src[i, max(-dy, 0):28 - max(dy, 0), max(-dx, 0):28 - max(dx, 0)]
    return out.reshape(b, 784)


@dataclass(frozen=True)
class EpochOptions:
    """Regularisation for one epoch, identical across backends.

    Attributes
    ----------
    dropout : float
        Probability of dropping each hidden unit (inverted dropout: kept units
        are scaled by ``1 / (1 - dropout)``).
    label_smoothing : float
        Targets are ``(1 - eps) * onehot + eps / 10``.
    shifts : ndarray or None
        ``(len(order), 2)`` int8: the translation of the sample at each position.
    seed : int
        The epoch's dropout seed, below 2**63.
    """

    dropout: float = 0.0
    label_smoothing: float = 0.0
    shifts: np.ndarray | None = None
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.dropout or self.label_smoothing or self.shifts is not None)
