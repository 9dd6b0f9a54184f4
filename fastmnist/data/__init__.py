"""MNIST-shaped datasets: the IDX format, the dataset registry, finding and downloading files.

Typical use::

    from fastmnist.data import load_dataset
    data = load_dataset("mnist")          # $FASTMNIST_DATA, the cache, or a download
    data.train.images                     # uint8, (60000, 784), C-contiguous
    data.test.labels                      # uint8, (10000,)

Environment variables: ``FASTMNIST_DATA`` (a directory of files to use),
``FASTMNIST_CACHE`` (where downloads go) and ``FASTMNIST_MIRROR`` (base URLs to
download from instead of the public mirrors).
"""

from __future__ import annotations

from .dataset import Dataset, Split, load_dataset, load_split
from .fetch import cache_dir, fetch_dataset, find_dataset_dir
from .idx import read_idx, write_idx
from .registry import DATASETS, FILES, DatasetInfo, dataset_names, get_dataset_info

__all__ = [
    "DATASETS",
    "FILES",
    "Dataset",
    "DatasetInfo",
    "Split",
    "cache_dir",
    "dataset_names",
    "fetch_dataset",
    "find_dataset_dir",
    "get_dataset_info",
    "load_dataset",
    "load_split",
    "read_idx",
    "write_idx",
]
