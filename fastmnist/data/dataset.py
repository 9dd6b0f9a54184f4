"""The in-memory dataset: two splits of uint8 images and labels, loaded from IDX files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, DataNotFoundError, InputError
from ..numerics import N_CLASSES, N_PIXELS
from ..validation import check_labels
from .fetch import _candidates, fetch_dataset, find_dataset_dir, locate_files, not_found_message
from .idx import read_idx
from .registry import SPLIT_FILES, get_dataset_info

_SIDE = 28


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split (train or test) of an MNIST-shaped dataset.

    Attributes
    ----------
    images
        uint8 pixels, C-contiguous, shape ``(n, 784)``. ``(n, 28, 28)`` is accepted
        on construction and reshaped without copying.
    labels
        uint8 digits 0-9, shape ``(n,)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.dtype != np.uint8:
            # Keeping pixels as bytes is what lets 60k images stay at 47 MB; scaling to
            # floats is the backends' job, one batch at a time.
            raise InputError(f"Split images must be uint8 pixels, got dtype {images.dtype}")
        if images.ndim == 3 and images.shape[1:] == (_SIDE, _SIDE):
            images = images.reshape(len(images), N_PIXELS)
        if images.ndim != 2 or images.shape[1] != N_PIXELS:
            raise InputError(
                f"Split images must have shape (n, 784) or (n, 28, 28), got {images.shape}"
            )
        labels = check_labels(self.labels, len(images), name="Split labels")
        object.__setattr__(self, "images", np.ascontiguousarray(images))
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images_2d(self) -> np.ndarray:
        """The images as an ``(n, 28, 28)`` view (no copy)."""
        return self.images.reshape(len(self.images), _SIDE, _SIDE)

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, images=uint8{self.images.shape})"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A named dataset with a train and a test split.

    Attributes
    ----------
    name
        Dataset name, e.g. ``"mnist"``.
    train, test
        The two splits.
    classes
        Name of each label 0-9.
    """

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...] = tuple(str(i) for i in range(N_CLASSES))

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, train={self.train!r}, test={self.test!r})"


def load_dataset(name: str = "mnist", data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a dataset's train and test splits into memory.

    Parameters
    ----------
    name
        ``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"``.
    data_dir
        Directory holding the four IDX files (or a ``<name>`` subdirectory that
        does). When given, the files must be there: nothing is downloaded, so a
        mistyped path fails at once; use ``fetch_dataset(name, data_dir)`` (or
        ``fastmnist download --data DIR``) to download into it. When omitted,
        ``$FASTMNIST_DATA`` and then the cache are searched, and missing files are
        downloaded into the cache.

    Returns
    -------
    Dataset
        ``train`` and ``test`` hold uint8 images ``(n, 784)`` and uint8 labels ``(n,)``.

    Raises
    ------
    ConfigError
        ``name`` is not a known dataset.
    DataNotFoundError
        The files are not on disk and cannot be downloaded.
    DataError
        A file is malformed; the message names it.
    """
    info = get_dataset_info(name)
    if data_dir is not None:
        directory = find_dataset_dir(info.name, data_dir)
        if directory is None:
            searched = _candidates(info, data_dir)
            raise DataNotFoundError(not_found_message(info, searched, None, data_dir))
    else:
        directory = fetch_dataset(info.name)
    files = locate_files(directory)
    if files is None:  # removed between the search and now
        raise DataNotFoundError(not_found_message(info, [directory], None))
    splits = {
        split: load_split(files[images], files[labels])
        for split, (images, labels) in SPLIT_FILES.items()
    }
    return Dataset(name=info.name, classes=info.classes, **splits)


def load_split(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> Split:
    """Read one split from its images and labels IDX files, checking they fit together.

    Parameters
    ----------
    images_path
        IDX file of shape ``(n, 28, 28)``.
    labels_path
        IDX file of shape ``(n,)`` with values 0-9.

    Returns
    -------
    Split

    Raises
    ------
    DataError
        Either file is malformed, has the wrong shape, or the counts differ, or a
        label is outside 0-9. The message names the file.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = read_idx(images_path)
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
        raise DataError(
            f"{images_path}: expected images of shape (n, 28, 28), got "
            f"{'x'.join(map(str, images.shape))}"
        )
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected labels of shape (n,), got {'x'.join(map(str, labels.shape))}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: holds {len(labels)} labels but {images_path.name} holds "
            f"{len(images)} images"
        )
    top = int(labels.max())
    if top >= N_CLASSES:
        where = int(np.argmax(labels >= N_CLASSES))
        raise DataError(
            f"{labels_path}: label {int(labels[where])} at index {where} is outside 0-9"
        )
    return Split(images.reshape(len(images), N_PIXELS), labels)
