"""The one ``njit`` wrapper both Numba kernel modules compile with.

Options live here so that the fast and the general kernels are built alike:
fastmath flags come from :mod:`fastmnist.numerics`, and ``error_model="numpy"``
makes division never raise (x/0 gives inf/nan as in NumPy). On AVX-512 CPUs
it also lifts LLVM's preference for 256-bit vectors (see :func:`_prefer_wide_vectors`).
:class:`CachedEntry` wraps the kernels called from Python so that every process
runs the cached machine code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: processes may compile the same kernel at once
    fcntl = None

import llvmlite.binding as llvm
import numpy as np
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


# A process that compiles a kernel runs other machine code than one that loads
# it from the cache (LLVM fuses and regroups floating-point operations
# differently in the two), and the two round differently. So an entry point
# whose overload is neither in this process nor in the cache is compiled in a
# child process, which writes the cache, and then loaded from there: every
# process with a cache runs the same code. The child searches the parent's
# sys.path: ``python -c`` would put the working directory first, where another
# checkout of fastmnist may be, whose kernels would then fill the cache instead.
# It starts Numba's thread pool first: an entry point whose parallel callees
# are already in the cache links their machine code, which needs the pool's
# symbols, and only compiling a parallel loop would have started it ("LLVM
# ERROR: Symbol not found: allocate_sched", once in a CI run).
_CHILD_COMPILE = """
import importlib, pickle, sys
path, module, name, sig = pickle.loads(sys.stdin.buffer.read())
sys.path[:] = path
import numba
numba.get_num_threads()
getattr(importlib.import_module(module), name).compile(sig)
"""


def _in_cache(dispatcher: Any, sig: tuple) -> bool:
    """Whether Numba's on-disk cache holds ``dispatcher``'s overload for ``sig``."""
    cache = dispatcher._cache
    key = cache._index_key(sig, dispatcher.targetctx.codegen())
    return key in cache._cache_file._load_index()


@contextlib.contextmanager
def _compile_lock(dispatcher: Any, sig: tuple) -> Iterator[None]:
    """Hold an exclusive lock, one per kernel and signature, on a file in the
    kernel's cache directory.

    Processes that start at once (test workers, two trainings) would otherwise
    each compile a kernel the cache lacks, a minute or more apiece; with the
    lock one compiles and the others wait, then find it in the cache. Where no
    lock can be had (no ``fcntl``, an unwritable directory) this does nothing.
    """
    fn = dispatcher.py_func
    digest = hashlib.sha1(f"{fn.__module__}.{fn.__qualname__}{sig}".encode()).hexdigest()[:16]
    try:
        path = os.path.join(dispatcher._cache._cache_path, f"fastmnist-compiling-{digest}.lock")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666) if fcntl is not None else None
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _type_key(value: Any) -> Any:
    """A cheap stand-in for Numba's type of ``value``: values with equal keys have
    equal Numba types. None for a value it cannot vouch for.

    Numba's ``typeof`` from Python takes about 16 us per array; the inference
    kernel, called once per 1024 images with some 25 arrays, spent 0.43 ms a call
    on it (predicting 10k images: 4 ms, as long as the kernels' own work).
    """
    if isinstance(value, np.ndarray):  # what Numba's array type depends on
        flags = value.flags
        return (type(value), value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous,
                flags.writeable, flags.aligned)
    if isinstance(value, tuple):
        keys = tuple(_type_key(v) for v in value)
        return None if None in keys else (tuple, keys)
    if type(value) is int:  # int64, or uint64 from 2**63 on
        return (int, value >= 2**63)
    if type(value) in (bool, float) or isinstance(value, np.generic):
        return type(value)
    return None


class CachedEntry:
    """A kernel called from Python whose machine code always comes from the cache.

    Calling it calls the kernel; the first call with new argument types that
    the cache does not hold yet first compiles it in a child process (see
    above). Without a writable cache, or if anything in that fails, the kernel
    is compiled here as usual (and a warning says so when the child failed).
    """

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self._ready: set = set()  # _type_key of argument types known to be loaded or cached

    def __call__(self, *args: Any) -> Any:
        key = _type_key(args)
        if key is None or key not in self._ready:
            self._ensure_cached(args)
            if key is not None:
                self._ready.add(key)
        return self.dispatcher(*args)

    def _ensure_cached(self, args: tuple) -> None:
        disp = self.dispatcher
        if not _cache_ok:
            return
        try:
            sig = tuple(disp.typeof_pyval(a) for a in args)
            if sig in disp.overloads or _in_cache(disp, sig):
                return
            payload = pickle.dumps((sys.path, disp.py_func.__module__, disp.py_func.__name__,
                                    sig))
            # The child must compile for this process's CPU features (the cache
            # is keyed by them), whatever _prefer_wide_vectors would do there.
            env = {**os.environ, "NUMBA_CPU_FEATURES": disp.targetctx.codegen()._tm_features}
        except Exception:  # noqa: BLE001 - Numba internals changed: compile in-process
            return
        with _compile_lock(disp, sig):
            if _in_cache(disp, sig):  # another process compiled it while this one waited
                return
            try:
                done = subprocess.run([sys.executable, "-c", _CHILD_COMPILE], input=payload,
                                      env=env, capture_output=True, timeout=1800)
                failure = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
                failed = done.returncode != 0
                if not failed and not _in_cache(disp, sig):
                    failure, failed = ["it left the cache without this kernel"], True
            except (OSError, subprocess.SubprocessError) as exc:
                failure, failed = [str(exc)], True
        if failed:
            warnings.warn(
                f"fastmnist: compiling the numba kernels in a child process failed ({failure}); "
                "compiling them here instead, which rounds slightly differently from "
                "processes that load them from the cache.",
                RuntimeWarning,
                stacklevel=3,
            )
