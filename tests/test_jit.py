"""The kernels' ``njit`` wrapper: its fallback when no cache directory is writable."""

from __future__ import annotations

import warnings

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


def test_inlined_helpers_are_never_cached(monkeypatch):
    seen = []
    monkeypatch.setattr(_jit, "njit", lambda **options: seen.append(options) or (lambda fn: fn))
    _jit.jit(inline=True)(lambda: None)
    assert seen == [{"inline": "always", **_jit.OPTIONS}]
