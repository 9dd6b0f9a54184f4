"""The one ``njit`` wrapper both Numba kernel modules compile with.

Options live here so that the fast and the general kernels are built alike:
fastmath flags come from :mod:`fastmnist.numerics`, and ``error_model="numpy"``
makes division never raise (x/0 gives inf/nan as in NumPy). On AVX-512 CPUs
it also lifts LLVM's preference for 256-bit vectors (see :func:`_prefer_wide_vectors`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import llvmlite.binding as llvm
from numba import njit
from numba.core import config
from numba.core.registry import cpu_target

from ..numerics import FASTMATH, WIDE_VECTORS

OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy", "nogil": True}


def _prefer_wide_vectors() -> bool:
    """Ask LLVM for 512-bit vectors on an AVX-512 CPU; return whether it was done.

    Numba compiles every function of a process with one feature string, read
    when its first dispatcher is created. So this only acts while none exists
    yet, and never over a ``NUMBA_CPU_FEATURES`` the user chose; it then applies
    to any other Numba code of the process too (only its vector width changes).
    Numba keys its on-disk cache by the feature string, so caches never mix.
    """
    if not WIDE_VECTORS or config.CPU_FEATURES is not None:
        return False
    if "_toplevel_target_context" in vars(cpu_target):  # a dispatcher exists already
        return False
    features = llvm.get_host_cpu_features()
    if not features.get("avx512f"):
        return False
    config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    return True


WIDE = _prefer_wide_vectors()

_cache_ok = True  # cleared, with one warning, if no cache directory is writable


def jit(parallel: bool = False, inline: bool = False) -> Callable:
    """``njit`` with the package's options, cached on disk where possible.

    Numba uses ``NUMBA_CACHE_DIR`` when set, else a ``__pycache__`` next to the
    source, else a per-user cache directory; only if none is writable does it
    raise, and then every kernel is compiled in memory in every process instead,
    after one warning. Inlined helpers are compiled into their callers: no cache
    of their own. A cache is keyed to its source file: after changing
    ``FASTMATH`` or ``FLUSH_DENORMALS`` in :mod:`fastmnist.numerics`, touch the
    kernel files (or clear the cache) to recompile.
    """

    def decorate(fn: Callable) -> Callable:
        global _cache_ok
        if inline:
            return njit(inline="always", **OPTIONS)(fn)
        if _cache_ok:
            try:
                return njit(cache=True, parallel=parallel, **OPTIONS)(fn)
            except RuntimeError as exc:
                _cache_ok = False
                warnings.warn(
                    f"fastmnist: no writable cache directory for the numba kernels ({exc}); "
                    "they will be compiled in every process. Set NUMBA_CACHE_DIR to fix this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return njit(cache=False, parallel=parallel, **OPTIONS)(fn)

    return decorate
