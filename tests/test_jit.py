"""The kernels' ``njit`` wrapper: its fallback when no cache directory is writable,
and the vector width it asks LLVM for."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import prange, typeof
from numba.core import config as numba_config

from fastmnist.backends import _jit


def test_no_writable_cache_warns_once_and_compiles_uncached(monkeypatch):
    made = []

    def fake_njit(*, cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        made.append(options)
        return lambda fn: fn

    monkeypatch.setattr(_jit, "njit", fake_njit)
    monkeypatch.setattr(_jit, "_cache_ok", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _jit.jit()(lambda: 1)
        second = _jit.jit(parallel=True)(lambda: 2)
    assert [str(w.message).count("NUMBA_CACHE_DIR") for w in caught] == [1]
    assert first() == 1 and second() == 2
    assert [m["parallel"] for m in made] == [False, True]
    assert all(m["fastmath"] == _jit.OPTIONS["fastmath"] for m in made)


# An entry point of this module's own, which the child process can import.
@_jit.jit()
def thrice(x):
    return 3 * x


@_jit.jit(parallel=True)
def doubled_in_parallel(x):
    out = np.empty_like(x)
    for i in prange(x.shape[0]):
        out[i] = 2 * x[i]
    return out


@_jit.jit()
def sum_doubled(x):
    return doubled_in_parallel(x).sum()


@_jit.jit()
def sum_doubled_plus_one(x):
    return sum_doubled(x) + 1


def _fresh_cached_kernel(monkeypatch, tmp_path):
    """``thrice`` again, with its cache (in this process and in children) in ``tmp_path``."""
    monkeypatch.setattr(numba_config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    return _jit.jit()(thrice.py_func)


def _record_children(monkeypatch) -> list:
    """The argument lists of the child processes ``_jit`` starts from now on."""
    children = []
    real_run = subprocess.run
    monkeypatch.setattr(_jit.subprocess, "run",
                        lambda *a, **k: children.append(a) or real_run(*a, **k))
    return children


def test_an_entry_point_missing_from_the_cache_is_compiled_by_a_child(monkeypatch, tmp_path):
    kernel = _fresh_cached_kernel(monkeypatch, tmp_path)
    children = _record_children(monkeypatch)
    entry = _jit.CachedEntry(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert entry(14) == 42 and entry(4) == 12
    assert len(children) == 1  # one signature, compiled once, by the child
    assert sum(kernel.stats.cache_hits.values()) == 1  # then loaded from the cache
    assert sum(kernel.stats.cache_misses.values()) == 0  # never compiled here


def test_a_process_waits_for_another_compiling_the_same_kernel(monkeypatch, tmp_path):
    # While another process holds the kernel's compile lock, the entry waits;
    # that process fills the cache, and the entry then loads the kernel without
    # compiling it again.
    kernel = _fresh_cached_kernel(monkeypatch, tmp_path)
    children = _record_children(monkeypatch)
    entry = _jit.CachedEntry(kernel)
    sig = (kernel.typeof_pyval(14),)
    results = []
    with _jit._compile_lock(kernel, sig):
        waiting = threading.Thread(target=lambda: results.append(entry(14)))
        waiting.start()
        waiting.join(1.0)
        # still waiting (a child compile would take this long too: the check
        # that no child ran, below, is what shows the lock)
        assert waiting.is_alive() and not results
        other = _jit.jit()(thrice.py_func)  # "the other process": compiles, writes the cache
        assert other(1) == 3
    waiting.join(60)
    assert results == [42]
    assert children == []  # no child compile: the kernel came from the cache
    assert sum(kernel.stats.cache_hits.values()) == 1
    assert sum(kernel.stats.cache_misses.values()) == 0


@pytest.mark.parametrize("child, reason", [
    ("raise SystemExit('no compiler here')", "no compiler here"),  # the child fails
    ("pass", "without this kernel"),  # the child succeeds but leaves the cache empty
])
def test_a_child_that_does_not_fill_the_cache_warns_and_compiles_here(monkeypatch, tmp_path,
                                                                       child, reason):
    kernel = _fresh_cached_kernel(monkeypatch, tmp_path)
    monkeypatch.setattr(_jit, "_CHILD_COMPILE", child)
    entry = _jit.CachedEntry(kernel)
    with pytest.warns(RuntimeWarning, match=f"child process failed.*{reason}"):
        assert entry(14) == 42
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert entry(4) == 12  # compiled here once; no second child, no warning


def test_the_child_imports_the_kernel_the_parent_runs(monkeypatch, tmp_path):
    # Another module of the same name in the working directory, where ``python -c``
    # would look first; the child must import the parent's, as the parent does.
    decoy = tmp_path / "decoy"
    (decoy / "tests").mkdir(parents=True)
    (decoy / "tests" / "__init__.py").write_text("")
    (decoy / "tests" / "test_jit.py").write_text("raise SystemExit('the decoy was imported')\n")
    monkeypatch.chdir(decoy)
    kernel = _fresh_cached_kernel(monkeypatch, tmp_path / "cache")
    entry = _jit.CachedEntry(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert entry(14) == 42
    assert sum(kernel.stats.cache_misses.values()) == 0  # the child filled the cache


def test_a_child_links_parallel_kernels_it_loads_from_the_cache(monkeypatch, tmp_path):
    # The second child compiles nothing parallel itself: it loads sum_doubled,
    # which the first child cached with the parallel loop linked into it. That
    # was the suspected path of one CI run's "Symbol not found: allocate_sched",
    # but this test also passes without the child starting the thread pool.
    monkeypatch.setattr(numba_config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    first = _jit.CachedEntry(_jit.jit()(sum_doubled.py_func))
    second = _jit.CachedEntry(_jit.jit()(sum_doubled_plus_one.py_func))
    x = np.arange(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert first(x) == 20.0
        assert second(x) == 21.0
    assert sum(second.dispatcher.stats.cache_misses.values()) == 0  # the child compiled it


def test_arguments_of_types_already_seen_are_not_typed_again(monkeypatch, tmp_path):
    kernel = _fresh_cached_kernel(monkeypatch, tmp_path)
    typed = []
    real_typeof = kernel.typeof_pyval
    monkeypatch.setattr(kernel, "typeof_pyval", lambda v: typed.append(v) or real_typeof(v))
    entry = _jit.CachedEntry(kernel)
    assert entry(14) == 42
    assert typed and set(typed) == {14}  # ours, and Numba's own as it loads the overload
    first = len(typed)
    assert entry(4) == 12 and entry(5) == 15
    assert len(typed) == first  # the same types: no slow typeof at all
    assert entry(np.float32(2)) == 6
    assert len(typed) > first  # new types are checked again


def _values_to_type():
    a = np.arange(12.0).reshape(3, 4)
    readonly = a.copy()
    readonly.flags.writeable = False
    return [
        a, a.copy(), np.asfortranarray(a), a[:, ::2], readonly, a.astype(np.float32),
        a.ravel(), a[None], np.arange(3, dtype=np.uint8), np.arange(3, dtype=np.int64),
        (a, a), (a, a.astype(np.float32)), (a,), (), 0, 5, 2**63, -(2**62), 1.5, True,
        np.float32(1), np.float64(1), np.int64(1), np.uint8(1),
    ]


def test_equal_type_keys_mean_equal_numba_types():
    # The other way round need not hold: 5 and np.int64(5) are both int64 to
    # Numba but get different keys, which costs one more check, nothing else.
    values = _values_to_type()
    for x in values:
        for y in values:
            if _jit._type_key(x) == _jit._type_key(y):
                assert typeof(x) == typeof(y), (x, y)
    a = values[0]
    assert _jit._type_key((a, 3, np.float32(1))) == _jit._type_key((a.copy(), 4, np.float32(2)))
    assert _jit._type_key([1, 2]) is None and _jit._type_key((1, [2])) is None


def test_inlined_helpers_are_never_cached(monkeypatch):
    seen = []
    monkeypatch.setattr(_jit, "njit", lambda **options: seen.append(options) or (lambda fn: fn))
    _jit.jit(inline=True)(lambda: None)
    assert seen == [{"inline": "always", **_jit.OPTIONS}]


def _in_fresh_process(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


_HAS_AVX512 = bool(llvm.get_host_cpu_features().get("avx512f"))

# A loop the vectoriser widens to its preferred width; the fresh process compiles
# it with the package's wrapper and reports the widest FMA register it got.
_WIDEST_FMA = """
import re, numpy as np
from fastmnist.backends._jit import jit
@jit()
def axpy(y, a, x):
    for i in range(x.shape[0]):
        y[i] += a * x[i]
x = np.ones(4096, np.float32)
axpy(x, np.float32(2), x)
asm = next(iter(axpy.inspect_asm().values()))
fmas = re.findall(r"vfmadd\\w*\\s+[^\\n]*", asm)
print("zmm" if any("zmm" in f for f in fmas) else "ymm" if any("ymm" in f for f in fmas)
      else "none")
"""


@pytest.mark.skipif(not _HAS_AVX512, reason="the CPU has no AVX-512")
def test_kernels_get_512_bit_vectors_on_avx512(tmp_path):
    # A fresh cache: code loaded from disk cannot be inspected.
    assert _in_fresh_process(_WIDEST_FMA, NUMBA_CACHE_DIR=str(tmp_path)) == "zmm"


@pytest.mark.skipif(_HAS_AVX512, reason="checks CPUs without AVX-512")
def test_no_feature_change_without_avx512():
    assert _in_fresh_process(
        "from fastmnist.backends import _jit; print(_jit.WIDE)") == "False"


def test_a_users_cpu_features_are_left_alone():
    code = ("from fastmnist.backends import _jit; from numba.core import config; "
            "print(_jit.WIDE, config.CPU_FEATURES)")
    assert _in_fresh_process(code, NUMBA_CPU_FEATURES="+avx2") == "False +avx2"


def test_nothing_changes_once_numba_has_compiled_something():
    # Numba fixes its feature string when its first dispatcher is made; a
    # change after that would not take effect, and WIDE must not claim it did.
    code = ("import numba\n@numba.njit\ndef f(x):\n    return x\n"
            "from fastmnist.backends import _jit; from numba.core import config\n"
            "print(_jit.WIDE, config.CPU_FEATURES)")
    assert _in_fresh_process(code) == "False None"
