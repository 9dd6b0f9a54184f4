"""Arrays on 2 MB pages, for the data the kernels read at random.

The sparse first layer reads the weight rows of each image's nonzero pixels,
about 150 rows in no useful order, and training reads its images in the order
of a random permutation. On 4 kB pages every such read is likely a miss in the
CPU's first-level TLB (64 entries, 256 kB of 4 kB pages): ``W0`` of 784-128-10
spans 100 pages, of 784-512-10 400, and the MNIST training images 11,500, more
than the second-level TLB holds. On 2 MB pages all of them fit. Measured on this
project's machine (README, Performance): inference's first layer alone 1.39x
(128 units) and 1.57x (512) faster with ``W0`` on 2 MB pages; training epochs
of 784-512-10 1.09-1.12x faster with ``W0``, its velocity and the images on them.

Linux gives an anonymous private mapping 2 MB pages ("transparent huge pages")
where it is advised ``MADV_HUGEPAGE`` (the default ``madvise`` mode of
``/sys/kernel/mm/transparent_hugepage/enabled``) and only over whole, aligned
2 MB ranges, so :func:`empty` maps one range more than it needs and aligns the
array in it. Where that cannot be had (another OS, the feature off), the
arrays are ordinary ones: the same results, only slower.
"""

from __future__ import annotations

import mmap
import threading

import numpy as np
from numpy.typing import DTypeLike

#: Bytes in a huge page (x86-64 and arm64 Linux with 4 kB base pages).
HUGE_PAGE = 2 << 20

#: Smaller arrays stay on ordinary pages: up to 64 kB they take at most 16 TLB
#: entries of the 64, and a 2 MB page for each would waste memory.
MIN_BYTES = 64 << 10

_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)

_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def mode() -> str | None:
    """The kernel's transparent huge page mode: ``"always"``, ``"madvise"`` or
    ``"never"`` (with ``"never"`` :func:`empty` gets 4 kB pages); None where
    there is no such setting (not Linux) or it cannot be read."""
    if _ADVICE is None:
        return None
    try:
        with open(_MODE_FILE) as f:
            text = f.read()
    except OSError:
        return None
    chosen = text[text.find("[") + 1 : text.find("]")] if "[" in text else ""
    return chosen or None


def empty(shape: int | tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """An uninitialised C-contiguous array on 2 MB pages where the OS gives them.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : data-type

    Returns
    -------
    numpy.ndarray
        Backed by its own anonymous mapping (freed with the array) when the
        array is at least :data:`MIN_BYTES` and the OS takes the advice;
        otherwise by :func:`numpy.empty`.
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _ADVICE is None or nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE
    try:
        region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        region.madvise(_ADVICE)
    except (OSError, ValueError):  # no such advice here, or no memory for the mapping
        return np.empty(shape, dtype)
    raw = np.frombuffer(region, dtype=np.uint8)  # keeps the mapping alive
    start = -raw.ctypes.data % HUGE_PAGE
    return raw[start : start + nbytes].view(dtype).reshape(shape)


_staging = threading.local()


def staged(a: np.ndarray, slot: int = 0) -> np.ndarray:
    """A copy of ``a`` in the calling thread's 2 MB-page buffer for ``slot``.

    The buffer is kept for the thread's next call with the same slot, shape and
    dtype, so staging costs a copy and no new mapping (a fresh 2 MB page is
    zeroed by the OS on first touch). A caller is done with one copy before it
    stages another in the same slot: the Numba backend stages the first layer's
    weights (slot 0) and their velocities (slot 1) for one kernel call, and
    copies them back before returning.
    """
    buffers = getattr(_staging, "buffers", None)
    if buffers is None:
        buffers = _staging.buffers = {}
    key = (a.shape, a.dtype.str)
    held = buffers.get(slot)
    if held is None or held[0] != key:
        buffers[slot] = None  # free the old buffer before mapping the new one
        buffers[slot] = (key, empty(a.shape, a.dtype))
    out = buffers[slot][1]
    out[...] = a
    return out
