"""Backend registry: names to implementations, imported only when first asked for.

Importing fastmnist imports no backend module, so it neither compiles a kernel
nor pays for importing numba, torch or jax until a backend is used.
"""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import BackendUnavailableError, ConfigError
from .base import Backend, EpochResult, Gradients

# name -> (module, class, the package it needs)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "numpy": ("fastmnist.backends.numpy_backend", "NumpyBackend", "numpy"),
    "numba": ("fastmnist.backends.numba_backend", "NumbaBackend", "numba"),
    "torch": ("fastmnist.backends.torch_backend", "TorchBackend", "torch"),
    "jax": ("fastmnist.backends.jax_backend", "JaxBackend", "jax"),
}
_INSTANCES: dict[str, Backend] = {}

#: Backend names in preference order for ``"auto"``.
AUTO_ORDER = ("numba", "numpy")


def known_backends() -> list[str]:
    """Every backend name fastmnist knows, installed or not."""
    return list(_REGISTRY)


def _module_exists(name: str) -> bool:
    module, _, _ = _REGISTRY[name]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available_backends() -> list[str]:
    """Names of the backends whose packages are installed here."""
    return [
        name
        for name, (_, _, needs) in _REGISTRY.items()
        if importlib.util.find_spec(needs) is not None and _module_exists(name)
    ]


def resolve_backend_name(name: str) -> str:
    """Map ``"auto"`` to the best installed backend and check the name exists."""
    if not isinstance(name, str):
        raise ConfigError(f"backend must be a name, got {name!r}")
    if name == "auto":
        installed = available_backends()
        return next(n for n in AUTO_ORDER if n in installed)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; choose one of {['auto', *_REGISTRY]}")
    return name


def get_backend(name: str = "auto") -> Backend:
    """Return the backend called ``name`` (``"auto"``: numba if installed, else numpy).

    Raises
    ------
    ConfigError
        The name is not a backend fastmnist knows.
    BackendUnavailableError
        The backend's package is not installed.
    """
    name = resolve_backend_name(name)
    if name not in _INSTANCES:
        module, cls, needs = _REGISTRY[name]
        if name not in available_backends():
            raise BackendUnavailableError(
                f"backend {name!r} needs the {needs!r} package, which is not installed "
                f"(pip install 'fastmnist[{needs}]')"
            )
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
    return _INSTANCES[name]


__all__ = [
    "AUTO_ORDER",
    "Backend",
    "EpochResult",
    "Gradients",
    "available_backends",
    "get_backend",
    "known_backends",
    "resolve_backend_name",
]
