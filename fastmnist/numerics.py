"""Numeric settings in one place: dtype policy, fastmath flags, pixel scaling.

Every backend reads these, so changing a policy here changes it everywhere.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

#: Floating dtypes a model can be trained in, by name.
DTYPES: dict[str, type[np.floating]] = {"float32": np.float32, "float64": np.float64}

#: LLVM fast-math flags for the Numba kernels. "contract" lets LLVM fuse
#: multiply-adds into FMAs and "reassoc" lets it vectorise reductions; both change
#: rounding only within a few ulps. "nnan"/"ninf" are deliberately absent: the
#: trainer must be able to see a NaN or Inf to detect divergence.
FASTMATH: set[str] = {"contract", "reassoc", "nsz", "arcp"}

#: Let LLVM vectorise the Numba kernels with 512-bit registers on CPUs that have
#: AVX-512. LLVM prefers 256-bit vectors there by default (a guard against the
#: clock drop of early AVX-512 parts); on this project's Xeon the kernels ran
#: 5-50% faster with 512-bit ones, every config, three interleaved runs (README,
#: Performance). Applied by :mod:`fastmnist.backends._jit`.
WIDE_VECTORS = True

#: Run the Numba kernels with flush-to-zero: subnormal numbers read and come
#: out as zero inside them (and only there; see
#: :mod:`fastmnist.backends._fpenv`). Momentum drives the velocities of rarely
#: lit pixels' weights subnormal, and on x86 each vector instruction that meets
#: one takes a microcode assist: 784-128-10 at batch 32 trained about 3x slower.
FLUSH_DENORMALS = True

#: Number of classes and pixels of every MNIST-shaped dataset.
N_CLASSES = 10
N_PIXELS = 784


def resolve_dtype(dtype: str | type | np.dtype) -> np.dtype:
    """Return the numpy dtype for a name or dtype, or raise ConfigError."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        return np.dtype(DTYPES[dtype])
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from exc
    if dt.name not in DTYPES:
        raise ConfigError(f"unsupported dtype {dt.name!r}; choose one of {sorted(DTYPES)}")
    return dt


def pixel_scale(dtype: np.dtype) -> np.floating:
    """The factor that maps a uint8 pixel to [0, 1], in ``dtype``.

    Backends multiply by this exact value (rather than divide by 255) so that
    every backend scales a pixel to the same bits.
    """
    return np.dtype(dtype).type(1.0 / 255.0)


def scale_images(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Scale uint8 images to [0, 1] in ``dtype``; floats are taken as already scaled."""
    dtype = np.dtype(dtype)
    if images.dtype == np.uint8:
        return images.astype(dtype) * pixel_scale(dtype)
    return np.asarray(images, dtype=dtype)
