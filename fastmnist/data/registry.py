"""The datasets fastmnist knows: their files, mirrors, checksums and class names.

All three ship as the same four IDX files under the same names, so a dataset is
described by where to fetch them and the hashes of the published archives.
Downloads are verified against these hashes; files already on disk are not
(they are validated structurally when read instead), because a re-compressed
but otherwise identical archive is as good as the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError

#: The four files of every dataset, without the ``.gz`` they are published with.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: (images, labels) file of each split.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": (TRAIN_IMAGES, TRAIN_LABELS),
    "test": (TEST_IMAGES, TEST_LABELS),
}


@dataclass(frozen=True)
class DatasetInfo:
    """Where to get one dataset and how to check it.

    Attributes
    ----------
    name
        Canonical name, as used on the command line and in ``Dataset.name``.
    title
        Human-readable name.
    mirrors
        Base URLs, tried in order; each serves ``<base><file>.gz``.
    hashes
        ``"sha256:<hex>"`` (or ``"md5:<hex>"``, any form pooch accepts) of each
        published ``.gz`` archive, keyed by archive file name.
    classes
        Name of each label 0-9.
    homepage
        Where the dataset is described and its licence stated.
    """

    name: str
    title: str
    mirrors: tuple[str, ...]
    hashes: Mapping[str, str] = field(repr=False)
    classes: tuple[str, ...]
    homepage: str = ""


def _hashes(*sha256: str) -> dict[str, str]:
    return {f"{stem}.gz": f"sha256:{h}" for stem, h in zip(FILES, sha256, strict=True)}


# MNIST's hashes are those of the official archives (the project's shared copy documents
# them); its original host yann.lecun.com is no longer reliable, so only mirrors are listed.
_MNIST = DatasetInfo(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    hashes=_hashes(
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
    classes=tuple("0123456789"),
    homepage="https://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of the Zalando archives as several independent loaders record them; the
# official README and torchvision publish MD5s (8d4fb7e6..., 25c81989..., bef4ecab...,
# bb300cfd...) of the same files. Not computed here: this project has no network.
_FASHION = DatasetInfo(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    hashes=_hashes(
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
)

# SHA-256 as several independent loaders record them (torchvision lists the MD5s
# bdb82020..., e144d726..., 5c965bf0..., 7320c461...). ROIS-CODH is the only publisher
# known; its HTTPS and HTTP addresses are listed so a blocked scheme is not fatal.
_KMNIST = DatasetInfo(
    name="kmnist",
    title="Kuzushiji-MNIST",
    mirrors=(
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    hashes=_hashes(
        "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
    ),
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    homepage="https://github.com/rois-codh/kmnist",
)

#: Every known dataset by canonical name. A plain dict, so tests (or a user with a
#: private dataset in the same layout) can add or replace entries.
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (_MNIST, _FASHION, _KMNIST)}


def dataset_names() -> tuple[str, ...]:
    """Names of the known datasets, in registry order.

    Returns
    -------
    tuple of str
        For example ``("mnist", "fashion-mnist", "kmnist")``.
    """
    return tuple(DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name.

    Case and ``_`` versus ``-`` are ignored, so ``"Fashion_MNIST"`` works.

    Parameters
    ----------
    name
        A name from :func:`dataset_names`.

    Returns
    -------
    DatasetInfo

    Raises
    ------
    ConfigError
        ``name`` is not a known dataset.
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}"
        )
    return DATASETS[key]
