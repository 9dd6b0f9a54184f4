"""Finding a dataset's files on disk, and downloading them when they are not there.

Places are searched in this order:

1. an explicit ``data_dir`` (the ``--data DIR`` option), checked as ``DIR/<name>/``
   and then as ``DIR`` itself;
2. ``$FASTMNIST_DATA``, checked as ``$FASTMNIST_DATA/<name>/``, and as
   ``$FASTMNIST_DATA`` itself for MNIST or when the directory is named after the
   dataset (so a directory of MNIST files is never mistaken for Fashion-MNIST);
3. the cache, ``$FASTMNIST_CACHE/<name>/`` or else ``pooch.os_cache("fastmnist")/<name>/``.

A file counts as present under its published ``.gz`` name or decompressed without
the suffix. Downloads go through pooch, which checks each archive's hash and
discards a file that fails it; files already on disk are not hashed (see
:mod:`fastmnist.data.registry`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DataError, DataNotFoundError
from .registry import FILES, DatasetInfo, get_dataset_info

#: Environment variables this module honours.
ENV_DATA = "FASTMNIST_DATA"
ENV_CACHE = "FASTMNIST_CACHE"
ENV_MIRROR = "FASTMNIST_MIRROR"

#: Seconds requests waits to connect or between bytes, per download.
TIMEOUT = 30


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir(name: str) -> Path:
    """Directory where ``name`` is cached (whether or not it exists yet).

    Parameters
    ----------
    name
        A dataset name.

    Returns
    -------
    pathlib.Path
        ``$FASTMNIST_CACHE/<name>`` when that variable is set, otherwise
        ``pooch.os_cache("fastmnist")/<name>``.
    """
    info = get_dataset_info(name)
    root = _env_path(ENV_CACHE)
    if root is None:
        import pooch  # deferred: it pulls in requests, which loading local files never needs

        root = Path(pooch.os_cache("fastmnist"))
    return root / info.name


def locate_files(directory: Path) -> dict[str, Path] | None:
    """The four dataset files in ``directory``, or None if any is missing.

    Each file may be the published ``.gz`` or its decompressed form; the ``.gz``
    is preferred when both are present.
    """
    found = {}
    for stem in FILES:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def _candidates(info: DatasetInfo, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Directories to search, most specific first."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root / info.name, root]
    dirs = []
    env = _env_path(ENV_DATA)
    if env is not None:
        dirs.append(env / info.name)
        # A bare directory of files says nothing about which dataset it holds; assume
        # the default (MNIST) unless the directory's own name says otherwise.
        if info.name == "mnist" or env.name.lower() == info.name:
            dirs.append(env)
    dirs.append(cache_dir(info.name))
    return dirs


def find_dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first directory holding all four files of dataset ``name``, without downloading.

    Parameters
    ----------
    name
        A dataset name (see :func:`~fastmnist.data.dataset_names`).
    data_dir
        If given, only this directory (and its ``<name>`` subdirectory) is searched;
        otherwise ``$FASTMNIST_DATA`` and then the cache are.

    Returns
    -------
    pathlib.Path or None
        The directory, or None when no searched place has all four files.

    Raises
    ------
    ConfigError
        ``name`` is not a known dataset.
    """
    info = get_dataset_info(name)
    for directory in _candidates(info, data_dir):
        if locate_files(directory) is not None:
            return directory
    return None


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Make sure the four files of dataset ``name`` are on disk; return their directory.

    Files found locally (see :func:`find_dataset_dir`) are used as they are. Any
    that are missing are downloaded, into ``data_dir`` when given and into the
    cache otherwise, each verified against its published hash.

    Parameters
    ----------
    name
        A dataset name (see :func:`~fastmnist.data.dataset_names`).
    data_dir
        Directory to look in and to download into. Created if needed.
    mirrors
        Base URLs to try, in order, instead of ``$FASTMNIST_MIRROR`` or the
        registry's mirrors.
    progress
        Show a download progress bar and log lines; by default only when standard
        error is a terminal.

    Returns
    -------
    pathlib.Path
        Directory holding the four files.

    Raises
    ------
    ConfigError
        ``name`` is not a known dataset.
    DataNotFoundError
        Some files are missing and no mirror could supply them (including when a
        download failed its hash check: such a file is not kept).
    DataError
        ``data_dir`` exists but is not a directory.
    """
    info = get_dataset_info(name)
    found = find_dataset_dir(info.name, data_dir)
    if found is not None:
        return found
    if data_dir is not None:
        target = Path(data_dir).expanduser()
        if target.exists() and not target.is_dir():
            raise DataError(f"{target} is not a directory")
    else:
        target = cache_dir(info.name)
    missing = [stem for stem in FILES if not _present(target, stem)]
    if progress is None:
        progress = _stderr_is_tty()
    failures = _download(info, missing, target, _mirrors(info, mirrors), progress)
    if failures is not None:
        raise DataNotFoundError(
            not_found_message(info, _candidates(info, data_dir), failures, data_dir)
        )
    return target


def _present(directory: Path, stem: str) -> bool:
    return (directory / f"{stem}.gz").is_file() or (directory / stem).is_file()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _mirrors(info: DatasetInfo, mirrors: Sequence[str] | None) -> list[str]:
    """Mirrors to try: the argument, else ``$FASTMNIST_MIRROR`` (whitespace-separated), else
    the registry's. An override replaces the registry's list rather than going first, so
    a test or an air-gapped site can be sure nothing else is contacted."""
    if mirrors is None:
        env = os.environ.get(ENV_MIRROR, "").split()
        mirrors = env or info.mirrors
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _download(
    info: DatasetInfo, stems: Iterable[str], target: Path, mirrors: list[str], progress: bool
) -> dict[str, list[str]] | None:
    """Download each of ``stems`` from the first mirror that serves it intact.

    Returns None on success, or the reasons each mirror failed.
    """
    import pooch  # deferred: see cache_dir

    failures: dict[str, list[str]] = {m: [] for m in mirrors}
    dead: set[str] = set()  # mirrors that could not be reached at all are not retried
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT)
    logger = pooch.get_logger()
    level = logger.level
    if not progress:
        logger.setLevel(logging.WARNING)  # keep "Downloading ..." lines off non-terminals
    try:
        for stem in stems:
            archive = f"{stem}.gz"
            for mirror in mirrors:
                if mirror in dead:
                    continue
                try:
                    pooch.retrieve(
                        mirror + archive,
                        known_hash=info.hashes.get(archive),
                        fname=archive,
                        path=target,
                        downloader=downloader,
                    )
                    break
                except Exception as exc:  # noqa: BLE001 - any failure means "try the next"
                    reason, unreachable = _reason(exc, archive)
                    if reason not in failures[mirror]:
                        failures[mirror].append(reason)
                    if unreachable:
                        dead.add(mirror)
            else:
                return failures or {"(none configured)": ["no mirror to try"]}
    finally:
        logger.setLevel(level)
    return None


def _reason(exc: Exception, archive: str) -> tuple[str, bool]:
    """A few words on why a download failed, and whether the host was unreachable."""
    try:
        import requests
    except ImportError:  # pragma: no cover - pooch requires requests
        requests = None
    if requests is not None:
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            return f"HTTP {exc.response.status_code} for {archive}", False
        if isinstance(exc, requests.exceptions.Timeout):
            return "timed out", True
        if isinstance(exc, requests.exceptions.ConnectionError):
            return "cannot connect", True
        if isinstance(exc, requests.exceptions.RequestException):
            return f"{type(exc).__name__} for {archive}", False
    if isinstance(exc, ValueError) and "hash" in str(exc).lower():
        return f"{archive} failed its checksum (discarded)", False
    if isinstance(exc, OSError):
        text = exc.strerror or type(exc).__name__
        return f"cannot write {archive} into {exc.filename or 'the data directory'}: {text}", False
    return f"{type(exc).__name__} for {archive}", False


def not_found_message(
    info: DatasetInfo,
    searched: Sequence[Path],
    failures: dict[str, list[str]] | None,
    data_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The one-line explanation raised when a dataset is neither on disk nor downloadable."""
    files = ", ".join(f"{stem}.gz" for stem in FILES)
    where = ", ".join(str(p) for p in searched)
    msg = (
        f"{info.title} ({info.name}) not found: need {files} (or the same without .gz) "
        f"in one directory; looked in {where}"
    )
    if failures is not None:
        tried = "; ".join(f"{m} ({', '.join(r) or 'not tried'})" for m, r in failures.items())
        msg += f"; download failed: {tried}"
    download = f"fastmnist download --dataset {info.name}"
    if data_dir is not None:
        download += f" --data {data_dir}"
    return (
        msg + ". Provide the files with --data DIR (data_dir=DIR), set FASTMNIST_DATA=DIR, "
        f"or run `{download}` while online"
    )
