"""Saving and loading models as a single ``.npz`` (never pickled).

Layout: ``format`` (the string ``"fastmnist-model"``), ``format_version``,
``fastmnist_version``, ``sizes``, ``dtype``, ``W0, b0, W1, b1, ...``, and JSON
strings ``config``, ``history``, ``dataset`` and ``extra`` (free-form state such
as a checkpoint's optimizer and generator, see :mod:`fastmnist.train.checkpoint`).
"""

from __future__ import annotations

import json
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError
from .fileio import atomic_path
from .model import Model
from .numerics import DTYPES, N_CLASSES, N_PIXELS

FORMAT = "fastmnist-model"
#: What zipfile and numpy's .npy parser raise on malformed bytes (header parsing
#: goes through Python's tokenizer, hence TokenError and SyntaxError).
_MALFORMED = (
    zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError,
    zlib.error, struct.error, SyntaxError, tokenize.TokenError, OverflowError,
)
FORMAT_VERSION = 1
#: Refuse files declaring more than this many parameters before reading any array.
MAX_PARAMETERS = 500_000_000


def save_model(
    model: Model, path: str | os.PathLike[str], *, extra: dict[str, np.ndarray] | None = None
) -> Path:
    """Write ``model`` to ``path`` atomically; a failed save leaves any old file intact.

    Parameters
    ----------
    model : Model
        Must hold only finite values: a diverged model is never saved.
    path : path-like
        Destination, conventionally ending in ``.npz``.
    extra : dict of str to ndarray, optional
        More arrays to store under ``extra/<name>`` (checkpoint state).

    Raises
    ------
    ModelFileError
        The model is not finite or the file cannot be written.
    """
    from . import __version__

    if not model.is_finite():
        raise ModelFileError("refusing to save a model holding NaN or infinite weights")
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "fastmnist_version": np.array(__version__),
        "sizes": np.array(model.sizes, dtype=np.int64),
        "dtype": np.array(model.dtype.name),
        "config": np.array(json.dumps(model.config)),
        "history": np.array(json.dumps(model.history)),
        "dataset": np.array(json.dumps(model.dataset)),
    }
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    for name, value in (extra or {}).items():
        arrays[f"extra/{name}"] = value
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot write the model ({exc.strerror or exc})") from None
    return path


def _fail(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"{path}: not a valid fastmnist model: {problem}")


def _text(npz: Any, key: str, path: Path) -> str:
    value = npz[key]
    if value.shape != () or value.dtype.kind != "U":
        raise _fail(path, f"{key!r} is not a string")
    return str(value)


def load_model_and_extra(path: str | os.PathLike[str]) -> tuple[Model, dict[str, np.ndarray]]:
    """Load a model and any ``extra`` arrays saved with it; see :func:`load_model`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as npz:
            return _read(npz, path)
    except ModelFileError:
        raise
    except _MALFORMED as exc:
        # numpy raises ValueError for pickled (object) arrays: nothing is executed.
        reason = "it asks for pickle, which is refused" if "pickle" in str(exc) else str(exc)
        raise _fail(path, reason or type(exc).__name__) from None


def _check_members(path: Path) -> None:
    """Read every member's .npy header and refuse what np.load should not attempt.

    np.load allocates an array from its header's shape before reading the data, so
    a few hundred bytes could ask for terabytes: the declared size is checked
    against the member's real size first. Object dtypes (pickle) are refused here
    too, before numpy sees them.
    """
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        if len(members) > 4 * 64 + 64:
            raise _fail(path, f"{len(members)} members is far more than a model holds")
        for info in members:
            if not info.filename.endswith(".npy"):
                raise _fail(path, f"unexpected member {info.filename!r}")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise _fail(path, f"{info.filename}: unsupported .npy version {version}")
            if dtype.hasobject:
                raise _fail(path, f"{info.filename} asks for pickle, which is refused")
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size:
                raise _fail(path, f"{info.filename} declares {declared} bytes but holds "
                                  f"{info.file_size}")


def _read(npz: Any, path: Path) -> tuple[Model, dict[str, np.ndarray]]:
    keys = set(npz.files)
    if "format" not in keys or _text(npz, "format", path) != FORMAT:
        raise _fail(path, "no fastmnist format marker")
    version = npz["format_version"] if "format_version" in keys else None
    if version is None or version.shape != () or int(version) > FORMAT_VERSION:
        raise _fail(path, f"unsupported format version {version}")
    sizes = npz["sizes"] if "sizes" in keys else None
    if sizes is None or sizes.ndim != 1 or sizes.dtype.kind not in "iu" or len(sizes) < 2:
        raise _fail(path, "missing or malformed layer sizes")
    sizes = [int(s) for s in sizes]
    if sizes[0] != N_PIXELS or sizes[-1] != N_CLASSES or min(sizes) < 1:
        raise _fail(path, f"layer sizes {sizes} do not run from {N_PIXELS} to {N_CLASSES}")
    if sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) > MAX_PARAMETERS:
        raise _fail(path, f"layer sizes {sizes} are implausibly large")
    dtype = _text(npz, "dtype", path)
    if dtype not in DTYPES:
        raise _fail(path, f"unsupported dtype {dtype!r}")
    weights, biases = [], []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for key, shape, out in ((f"W{i}", (n_in, n_out), weights), (f"b{i}", (n_out,), biases)):
            if key not in keys:
                raise _fail(path, f"missing array {key}")
            arr = npz[key]
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise _fail(
                    path, f"{key} is {arr.dtype}{list(arr.shape)}, expected {dtype}{list(shape)}"
                )
            if not np.isfinite(arr).all():
                raise _fail(path, f"{key} holds NaN or infinite values")
            out.append(np.ascontiguousarray(arr))
    model = Model(weights, biases)
    try:
        model.config = json.loads(_text(npz, "config", path)) if "config" in keys else {}
        model.history = json.loads(_text(npz, "history", path)) if "history" in keys else []
        model.dataset = json.loads(_text(npz, "dataset", path)) if "dataset" in keys else None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(model.config, dict) or not isinstance(model.history, list):
        raise _fail(path, "metadata has the wrong structure")
    extra = {k[len("extra/"):]: npz[k] for k in npz.files if k.startswith("extra/")}
    return model, extra


def load_model(path: str | os.PathLike[str]) -> Model:
    """Load a model written by :meth:`Model.save` or ``fastmnist train --out``.

    Raises
    ------
    ModelFileError
        The file is missing, is not a fastmnist model, is truncated, has wrong
        shapes or dtypes, or holds pickled objects (never unpickled).
    """
    return load_model_and_extra(path)[0]
