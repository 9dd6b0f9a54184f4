"""The fast backend: fused, parallel Numba kernels that run a whole epoch per call.

The kernels live in :mod:`fastmnist.backends._numba_kernels` (design notes in
its docstring); a network with one hidden layer of at most 16 units trains by
plain SGD in :mod:`fastmnist.backends._numba_narrow` instead. This class shapes
the arguments, owns the scratch buffers and controls threads. Importing it
compiles nothing: each kernel compiles, or loads from Numba's on-disk cache, on
its first call or in :meth:`NumbaBackend.warmup`.

Threads
-------
By default the kernels use Numba's default thread count, which is every core
(``NUMBA_NUM_THREADS``, itself defaulting to the CPU count).
:meth:`NumbaBackend.limit_threads` lowers it for a block of code. The thread
count changes only the speed: no sum is ever split between threads, so every
sum runs in an order fixed by the data, and weights, losses and probabilities
are bit-identical for any number of threads.
"""

from __future__ import annotations

import contextlib
import copy
import threading

import numba
import numpy as np

from .. import hugepages
from ..errors import InputError
from ..model import Model
from ..numerics import N_CLASSES, N_PIXELS, pixel_scale, scale_images
from ..optim import SGD, Optimizer
from . import _numba_kernels as kernels
from . import _numba_narrow as narrow
from ._jit import CachedEntry
from ._numba_general import train_epoch_general
from .augment import EpochOptions
from .base import BackendBase, EpochResult, Gradients, scoped_threads
from .numpy_backend import NumpyBackend

# The entry points into the kernels, each loaded from Numba's cache (and
# compiled in a child process when missing there): see _jit.CachedEntry.
_RUN_BATCHES = CachedEntry(kernels.run_batches)
_PREDICT = CachedEntry(kernels.predict)
_RUN_NARROW = CachedEntry(narrow.run_narrow)
_PREDICT_NARROW = CachedEntry(narrow.predict_narrow)

#: Samples per call of the inference kernel. Its scratch grows with the chunk
#: (3.2 MB of pixel lists at 1024, 12.8 MB at 4096) and a thread's share of the
#: hidden activations is reread after the first layer is done for all of it, so
#: smaller chunks stay in cache: predicting the 10k MNIST test images took about
#: 1.5x less time at 1024 than at 4096 for 784-10-10 and up to 1.3x less for
#: 784-128-10 (interleaved repeats, 2 threads); 256-1024 were alike.
_PREDICT_CHUNK = 1024

#: Share of nonzero pixels above which inference hands the first layer to BLAS.
#: The kernel's first layer runs over each image's nonzero pixels, which beats a
#: dense GEMM only while most pixels are zero (MNIST: 19%; Fashion-MNIST: 50%).
#: 10k random images, 784-128-10 and 784-512-10, kernel against numpy side by
#: side: 1.7x faster at 20% nonzero, 1.2x at 35%, level at 50%.
DENSE_SHARE = 0.45


#: Least images a prediction, and samples a training call, must have for the
#: first layer's weights (and in training their velocities) to be copied to
#: 2 MB pages for the call (:mod:`fastmnist.hugepages`). The kernels read
#: about 150 rows of ``W0`` per image at random; the copies in and out cost
#: a few sequential passes over it. The two thresholds are estimates of where
#: that is paid back, not measured crossovers; single training steps (the
#: bench's step timing) stay on the caller's arrays.
STAGE_MIN_IMAGES = 256
STAGE_MIN_SAMPLES = 2048


def _mostly_nonzero(images: np.ndarray) -> bool:
    """Whether more than :data:`DENSE_SHARE` of the pixels are nonzero, judged on
    about 256 evenly spaced images, so that the check stays small beside the
    prediction however many images there are."""
    sample = images[:: max(1, len(images) // 256)]
    return sample.size > 0 and np.count_nonzero(sample) > DENSE_SHARE * sample.size


#: The inference scratch of each Python thread, kept for its next call: at 10
#: hidden units, allocating the general kernels' scratch afresh (about 17 MB)
#: made a 10k-image prediction about a third slower, measured side by side.
#: Per thread, so that concurrent predictions never share scratch; one shape at
#: a time, so that it holds at most one call's worth of memory.
_predict_scratch = threading.local()


def _predict_buffers(model: Model, batch: int, n_threads: int) -> tuple:
    """The inference scratch for ``model`` (general or narrow kernels), reused
    while the shape stays the same."""
    key = (model.dtype, model.sizes, batch, n_threads)
    if getattr(_predict_scratch, "key", None) != key:
        _predict_scratch.key = None  # free the old scratch before allocating the new
        _predict_scratch.buffers = None
        if _is_narrow(model):
            buffers = _buffers_narrow(model.dtype, batch, training=False)
        else:
            buffers = _buffers(model, batch, n_threads, training=False)
        _predict_scratch.buffers = buffers
        _predict_scratch.key = key
    return _predict_scratch.buffers


def _images(images: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.floating]:
    """The image array the kernels read, and the factor they scale its values by.

    uint8 pixels are passed as they are and scaled inside the kernels; floats
    are already scaled and only cast to the model's dtype (a copy only if needed).
    """
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images), pixel_scale(dtype)
    return np.ascontiguousarray(images, dtype=dtype), dtype.type(1)


def _rows(arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Biases as ``(1, n)`` views, so the kernels treat every parameter as a matrix."""
    return tuple(a.reshape(1, -1) for a in arrays)


def _buffers(model: Model, batch: int, n_threads: int, training: bool = True) -> tuple:
    """Scratch for batches of up to ``batch`` samples: ``(WT, acts, dels, ws)``.

    See :func:`fastmnist.backends._numba_kernels.run_batches` for the layout.
    The first layer works on blocks of four samples, so the buffers it touches
    have room for ``batch`` rounded up to a multiple of four. Inference
    (``training=False``) gets placeholders for what only training uses.
    """
    dt, sizes = model.dtype, model.sizes
    rows = -(-batch // 4) * 4
    dummy = np.empty((1, 1), dtype=dt)
    dels = tuple(np.empty((rows, n), dtype=dt) for n in sizes[1:])
    acts = (dummy, *(np.empty((rows, n), dtype=dt) for n in sizes[1:-1]), dels[-1])
    wt = (dummy, *(np.empty((n_out, n_in), dtype=dt) for n_in, n_out in
                   zip(sizes[1:-1], sizes[2:])))
    width = max([kernels.TILE_GRAD, *sizes[1:]])  # a layer's outputs, or the last one's inputs
    scratch = max([batch, N_PIXELS, *sizes[1:]])  # lists of a batch, a layer or an image
    lists = kernels.N_PARTS * rows // 4 if training else 1  # per pixel part and block
    part = N_PIXELS // kernels.N_PARTS
    parts = kernels.N_PARTS * rows if training else 1
    ws = (
        np.empty((lists, part), dtype=np.uint32),  # ulist: union pixels
        np.empty((lists, kernels.BANDS_PER_PART + 1), dtype=np.int64),  # uband: band starts
        np.empty(lists, dtype=np.int64),  # ucount: union sizes
        np.empty((lists, 4, part), dtype=dt),  # xv: the 4 samples' values
        np.empty((parts, sizes[1]), dtype=dt),  # P: first layer by part
        np.empty((n_threads, scratch), dtype=np.uint32),  # sidx: per-thread index lists
        np.empty((n_threads, scratch), dtype=dt),  # sval
        np.empty((n_threads * kernels.BAND, width), dtype=dt),  # acc: gradient rows
        np.empty(batch, dtype=np.float64),  # loss per sample
        np.empty(batch, dtype=np.int64),  # hit per sample
    )
    return wt, acts, dels, ws


def _params(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """C-contiguous versions of parameter arrays: the arrays themselves when they already are."""
    return [np.ascontiguousarray(a) for a in arrays]


def _check_indices(images: np.ndarray, labels: np.ndarray, order: np.ndarray) -> None:
    """The kernels index without bounds checks: refuse indices that would read out of bounds."""
    if images.ndim != 2 or images.shape[1] != N_PIXELS:
        raise InputError(f"images must be (n, {N_PIXELS}), got shape {images.shape}")
    if len(labels) != len(images):
        raise InputError(f"{len(labels)} labels for {len(images)} images")
    if len(labels) and int(labels.max()) >= N_CLASSES:
        raise InputError(f"labels must be digits 0-{N_CLASSES - 1}")
    if len(order) and (int(order.min()) < 0 or int(order.max()) >= len(images)):
        raise InputError(f"order must index the {len(images)} images")


def _is_narrow(model: Model) -> bool:
    """Whether ``model`` has the one narrow hidden layer the narrow kernels take."""
    return len(model.sizes) == 3 and model.sizes[1] <= narrow.MAX_WIDTH


def _narrow_blocks(flat: np.ndarray, w0: np.ndarray, w1: np.ndarray, b0: np.ndarray,
                   b1: np.ndarray):
    """Pairs (a parameter's place in the narrow kernels' flat row, the parameter as a
    matrix): see ``narrow.layout``; the rest of each place is zero padding."""
    for name, a in zip(("W0", "W1", "b0", "b1"), (w0, w1, b0.reshape(1, -1), b1.reshape(1, -1))):
        offset, rows = narrow.layout()[name]
        place = flat[0, offset : offset + rows * narrow.WIDTH].reshape(rows, narrow.WIDTH)
        yield place[: a.shape[0], : a.shape[1]], a


def _pack_narrow(w0: np.ndarray, w1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """The parameters in the narrow kernels' flat row, ``(1, narrow.N_PARAMS)``, zero padded."""
    flat = np.zeros((1, narrow.N_PARAMS), dtype=w0.dtype)
    for place, a in _narrow_blocks(flat, w0, w1, b0, b1):
        place[...] = a
    return flat


def _unpack_narrow(flat: np.ndarray, w0: np.ndarray, w1: np.ndarray, b0: np.ndarray,
                   b1: np.ndarray) -> None:
    """Copy the flat row back into the parameters (the inverse of :func:`_pack_narrow`)."""
    for place, a in _narrow_blocks(flat, w0, w1, b0, b1):
        a[...] = place


def _predict_narrow(model: Model, x: np.ndarray, scale: np.floating, probs: np.ndarray,
                    hidden: list[np.ndarray] | None, n_threads: int) -> np.ndarray:
    """:meth:`NumbaBackend._predict` through the narrow kernels."""
    flat = _pack_narrow(*_params(model.weights), *_params(model.biases))
    width = model.sizes[1]
    ws = _predict_buffers(model, min(len(x), _PREDICT_CHUNK), n_threads)
    for first in range(0, len(x), _PREDICT_CHUNK):
        nb = min(_PREDICT_CHUNK, len(x) - first)
        _PREDICT_NARROW(flat, x, scale, probs, ws, first, nb, width, n_threads)
        if hidden is not None:
            hidden[0][first : first + nb] = ws[2][:nb, :width]
    return probs


def _train_narrow(
    w: list[np.ndarray], b: list[np.ndarray], vw: list[np.ndarray], vb: list[np.ndarray],
    x: np.ndarray, labels: np.ndarray, order: np.ndarray, batch_size: int, lrs: np.ndarray,
    optimizer: SGD, scale: np.floating,
) -> tuple[float, int]:
    """An SGD epoch of a one-hidden-layer network of at most ``narrow.MAX_WIDTH``
    units, in place on ``w, b, vw, vb``, on up to two of Numba's threads (one
    per pixel part; the groups of sixteen samples go to whichever is free)."""
    dt = w[0].dtype
    params, velocities = _pack_narrow(*w, *b), _pack_narrow(*vw, *vb)
    ws = _buffers_narrow(dt, min(batch_size, len(order)))
    loss_sum, correct = _RUN_NARROW(
        params, velocities, x, labels, order, batch_size, lrs, dt.type(optimizer.momentum),
        bool(optimizer.nesterov), dt.type(optimizer.weight_decay), scale, ws, w[0].shape[1],
    )
    _unpack_narrow(params, *w, *b)
    _unpack_narrow(velocities, *vw, *vb)
    return loss_sum, correct


def _buffers_narrow(dt: np.dtype, rows: int, training: bool = True) -> tuple:
    """Scratch of :func:`narrow.run_narrow` (or, without ``training``, of
    :func:`narrow.predict_narrow`) for batches of up to ``rows`` samples."""
    width = narrow.WIDTH
    blocks = -(-rows // 4)  # the first layer works on blocks of four samples
    groups = -(-rows // width) * width  # the output layer, on groups of sixteen
    lists = narrow.N_PARTS * (blocks if training else 1)  # kept for the gradient
    return (
        np.zeros((width, width), dtype=dt),  # W1T: the output layer by class
        np.zeros((narrow.N_PARTS * 4 * blocks, width), dtype=dt),  # HP: partial sums
        np.zeros((groups, width), dtype=dt),  # H: hidden layer
        np.zeros((groups, width), dtype=dt),  # HT: ... transposed by groups of sixteen
        np.zeros((groups, width), dtype=dt),  # Z: logits, then their gradient
        np.zeros((groups, width), dtype=dt),  # D0: the hidden layer's gradient
        np.zeros((narrow.N_PARTS, narrow.PART_PIXELS * width), dtype=dt),  # GP: per part
        np.zeros((groups // width, narrow.N_SMALL), dtype=dt),  # GS: per group
        np.empty((lists, narrow.PART_PIXELS), dtype=np.uint32),  # ulist: union pixels
        np.empty((lists, 4, narrow.PART_PIXELS), dtype=dt),  # xv: their values
        np.empty(lists, dtype=np.int64),  # counts: union sizes
        np.empty((2, narrow.N_SMALL), dtype=dt),  # acc: the small layers' gradient
    )


class NumbaBackend(BackendBase):
    """Fused, multi-threaded Numba kernels for CPU training and inference."""

    name = "numba"

    def _predict(self, model: Model, images: np.ndarray, hidden: list[np.ndarray] | None):
        x, scale = _images(images, model.dtype)  # x is (n, 784)
        n, n_threads = len(x), numba.get_num_threads()
        probs = np.empty((n, N_CLASSES), dtype=model.dtype)
        if _is_narrow(model):
            return _predict_narrow(model, x, scale, probs, hidden, n_threads)
        wt, acts, dels, ws = _predict_buffers(model, min(n, _PREDICT_CHUNK), n_threads)
        weights, biases = _params(model.weights), _rows(_params(model.biases))
        if n >= STAGE_MIN_IMAGES:
            weights[0] = hugepages.staged(weights[0])
        weights = tuple(weights)
        for first in range(0, n, _PREDICT_CHUNK):
            nb = min(_PREDICT_CHUNK, n - first)
            _PREDICT(weights, biases, wt, acts, dels, x, scale, probs, ws, first, nb, n_threads)
            if hidden is not None:
                for out, a in zip(hidden, acts[1:-1]):
                    out[first : first + nb] = a[:nb]
        return probs

    def predict_proba(self, model: Model, images: np.ndarray) -> np.ndarray:
        # On mostly nonzero pixels the zero-skipping kernel loses to a dense
        # GEMM; the reference's BLAS forward computes the same thing. (The
        # narrow kernels skip no zeros: they take every input.)
        if not _is_narrow(model) and _mostly_nonzero(images):
            return NumpyBackend().predict_proba(model, images)
        return self._predict(model, images, None)

    def forward(self, model: Model, images: np.ndarray) -> list[np.ndarray]:
        hidden = [np.empty((len(images), h), dtype=model.dtype) for h in model.hidden]
        probs = self._predict(model, images, hidden)
        return [scale_images(images, model.dtype), *hidden, probs]

    def gradients(self, model: Model, images: np.ndarray, labels: np.ndarray) -> Gradients:
        x, scale = _images(images, model.dtype)  # x is (B, 784)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        n, dt, n_threads = len(x), model.dtype.type, numba.get_num_threads()
        order = np.arange(n, dtype=np.int64)
        _check_indices(x, labels, order)
        gw = [np.empty_like(w, order="C") for w in model.weights]
        gb = [np.empty_like(b, order="C") for b in model.biases]
        probs = np.empty((n, N_CLASSES), dtype=model.dtype)
        wt, acts, dels, ws = _buffers(model, n, n_threads)
        # Without training the velocities are never touched: placeholders of the right type.
        unused = tuple(np.empty((1, 1), dtype=model.dtype) for _ in model.weights)
        loss_sum, _ = _RUN_BATCHES(
            tuple(_params(model.weights)), _rows(_params(model.biases)), unused, unused,
            tuple(gw), _rows(gb), wt, acts, dels, x, labels, order, n, np.zeros(1), dt(0),
            False, dt(0), scale, False, probs, ws, n_threads,
        )
        return Gradients(loss_sum / n, probs, gw, gb)

    def train_epoch(
        self,
        model: Model,
        optimizer: SGD,
        images: np.ndarray,
        labels: np.ndarray,
        order: np.ndarray,
        batch_size: int,
        lrs: np.ndarray,
        options: EpochOptions | None = None,
    ) -> EpochResult:
        if not isinstance(optimizer, SGD) or (options is not None and options.active):
            # Adam and regularisation run in the general kernels; plain SGD, the
            # common case, in the specialised fast ones below.
            loss_sum, correct = train_epoch_general(
                model, optimizer, images, labels, order, batch_size, lrs, options
            )
            return EpochResult(loss_sum, correct, len(order))
        optimizer.init_state(model.weights, model.biases)
        x, scale = _images(images, model.dtype)  # x is (n, 784)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        order = np.ascontiguousarray(order, dtype=np.int64)
        lrs = np.ascontiguousarray(lrs, dtype=np.float64)
        batch_size = int(batch_size)
        _check_indices(x, labels, order)
        if batch_size < 1 or len(lrs) < -(-len(order) // batch_size):
            raise InputError("need batch_size >= 1 and one learning rate per step")
        dt, n_threads = model.dtype.type, numba.get_num_threads()
        # The kernels update C-contiguous arrays in place; any other layout is
        # trained on a contiguous copy and copied back.
        originals = [*model.weights, *model.biases, *optimizer.velocity_w, *optimizer.velocity_b]
        work = _params(originals)
        n_layers = len(model.weights)
        if not _is_narrow(model) and len(order) >= STAGE_MIN_SAMPLES:
            # W0 and its velocity, trained on 2 MB pages and copied back below.
            work[0] = hugepages.staged(work[0], slot=0)
            work[2 * n_layers] = hugepages.staged(work[2 * n_layers], slot=1)
        w, b, vw, vb = (work[i * n_layers : (i + 1) * n_layers] for i in range(4))
        if _is_narrow(model):
            loss_sum, correct = _train_narrow(w, b, vw, vb, x, labels, order, batch_size, lrs,
                                              optimizer, scale)
        else:
            wt, acts, dels, ws = _buffers(model, min(batch_size, len(order)), n_threads)
            # Training never writes gradients out: placeholders of the right type.
            unused = tuple(np.empty((1, 1), dtype=model.dtype) for _ in model.weights)
            loss_sum, correct = _RUN_BATCHES(
                tuple(w), _rows(b), tuple(vw), _rows(vb), unused, unused, wt, acts, dels, x,
                labels, order, batch_size, lrs, dt(optimizer.momentum),
                bool(optimizer.nesterov), dt(optimizer.weight_decay), scale, True,
                np.empty((1, N_CLASSES), dtype=model.dtype), ws, n_threads,
            )
        for original, trained in zip(originals, work):
            if trained is not original:
                original[...] = trained
        return EpochResult(float(loss_sum), int(correct), len(order))

    def warmup(
        self, model: Model, optimizer: Optimizer, batch_size: int, n_samples: int | None = None,
        options: EpochOptions | None = None,
    ) -> None:
        """Compile (or load from the cache) the kernels this configuration uses.

        Trains two steps on copies, so neither ``model`` nor ``optimizer`` changes;
        with active ``options`` (or a non-SGD optimizer) that is the general
        kernels' path. The kernels do not depend on ``n_samples``.
        """
        model = model.copy()
        opt = copy.deepcopy(optimizer)
        images = np.zeros((2, N_PIXELS), dtype=np.uint8)
        labels = np.zeros(2, dtype=np.uint8)
        steps = -(-len(images) // batch_size)
        if options is not None and options.active:
            shifts = None if options.shifts is None else np.zeros((2, 2), dtype=np.int8)
            options = EpochOptions(options.dropout, options.label_smoothing, shifts, 0)
        self.train_epoch(model, opt, images, labels, np.arange(2), batch_size, np.zeros(steps),
                         options)
        self.predict_proba(model, images)

    def limit_threads(self, threads: int | None) -> contextlib.AbstractContextManager[None]:
        """Run the kernels on ``threads`` threads inside the block (None: leave as is)."""
        return scoped_threads(numba.get_num_threads, numba.set_num_threads, threads)
