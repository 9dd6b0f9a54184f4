"""Numba kernels for one narrow hidden layer (up to :data:`WIDTH` units), plain SGD.

At ten hidden units the general kernels (:mod:`._numba_kernels`) spend most of
a step on bookkeeping, not arithmetic: their column loops are ten long, which
fills no vector register. Here every row of every layer is padded with zeros
to :data:`WIDTH` lanes, one AVX-512 register of float32, and each row
operation is one vector multiply-add (``_rows16.axpy_row``). A pixel's
first-layer weights are one such row, so the nonzero pixels of a block of four
images (their union, listed sixteen pixels at a time by ``_compress``) select
the rows the block needs, in the forward pass and in the gradient.

All parameters live in one flat row ``P`` (:func:`layout`): the first layer
``W0`` (784 rows of ``WIDTH``), the output layer ``W1`` (``WIDTH`` rows of
``WIDTH``: hidden unit by class), then the two biases; their velocities ``V``
have the same layout. The first layer's rows are split into :data:`N_PARTS`
pixel parts (the top and bottom of the image), each computed, read and
updated by one thread only, so that they never leave its core. A training
step is two parallel phases:

X. ``_first_layer``, per part: the first layer's gradient of the previous
   batch over the part's rows, block by block over the union lists kept from
   its forward pass (four deltas per loaded row), then SGD on those rows; the
   top part also sums the chunks' gradients of the small layers and updates
   them. Then the part's share of the next batch's hidden layer: per block of
   four, the union list of the part's pixels and the partial sums (each loaded
   weight row serves the four samples; eight chains in registers).
Y. ``_output_layer``, over :data:`N_CHUNKS` chunks of samples: the parts'
   partial sums plus the bias, ReLU, the logits, softmax and cross-entropy,
   and the gradient back to the hidden layer; the output layer's and the
   biases' gradients go to the chunk's own row of ``GS``. It also asks for
   the next batch's images, so that phase X finds them in cache.

Between the phases only the partial sums and the hidden layer's gradient
(``WIDTH`` values per sample) cross cores. (Split by samples instead, each
step moved half of ``W0`` and of its gradient across cores; side by side, the
split by parts ran 784-10-10 b32 about 1.4x faster, b128 about 1.05x.)

Skipping zero pixels is exact for finite weights, as in the general kernels;
on dense inputs every pixel is listed and the work is that of a dense product.
Parts and chunks are fixed, not the thread count, and every sum runs in an
order fixed by the data, so results are bit-identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..numerics import N_PIXELS
from ._compress import gather_union16
from ._fpenv import flush_denormals, restore_fp_state
from ._jit import jit as _jit
from ._numba_kernels import N_OUT, _apply, _block_images
from ._prefetch import prefetch
from ._rows16 import (LANES, add_rows, axpy_row, copy_row, divide_row, mask_row, relu_row,
                      softmax_row)

#: Hidden units the narrow path takes, and the padded width of its rows: sixteen
#: float32 fill one AVX-512 register (float64 rows take two). Wider layers go to
#: the general kernels, whose column loops then fill registers.
WIDTH = LANES
MAX_WIDTH = WIDTH

#: Offsets in the flat parameter row: W0 (pixel p at W0_AT + p * WIDTH), W1
#: (hidden unit u at W1_AT + u * WIDTH), the hidden bias, the output bias.
W0_AT = 0
W1_AT = N_PIXELS * WIDTH
B0_AT = W1_AT + WIDTH * WIDTH
B1_AT = B0_AT + WIDTH
N_PARAMS = B1_AT + WIDTH
N_SMALL = N_PARAMS - W1_AT  # the output layer and both biases

#: Pixel parts: part q owns pixels PART_START[q] to PART_START[q + 1]. Whole
#: chunks of sixteen pixels (the compress stores' width), near the middle row.
N_PARTS = 2
PART_START = (0, 384, N_PIXELS)
PART_PIXELS = max(PART_START[q + 1] - PART_START[q] for q in range(N_PARTS))  # list room

#: Chunks of samples in phase Y, whose small-layer gradients are summed apart
#: (whole blocks of four). Fixed, not the thread count, so that results do not
#: depend on it.
N_CHUNKS = 2

#: Images requested this many blocks of four before they are listed (see _prefetch).
PREFETCH_AHEAD = 4


def layout() -> dict[str, tuple[int, int]]:
    """Where each parameter lives in the flat row: name -> (offset, rows of ``WIDTH``)."""
    return {"W0": (W0_AT, N_PIXELS), "W1": (W1_AT, WIDTH), "b0": (B0_AT, 1), "b1": (B1_AT, 1)}


@_jit(inline=True)
def _chunk_bounds(c, nb, n_chunks):
    """Samples ``[lo, hi)`` of chunk ``c`` of ``n_chunks`` of a batch of ``nb``, in whole
    blocks of four."""
    n_blocks = (nb + 3) // 4
    return 4 * (c * n_blocks // n_chunks), min(4 * ((c + 1) * n_blocks // n_chunks), nb)


@_jit(inline=True)
def _union(images, order, first, b, nb, scale, q, ulist, xv, r):
    """List block ``b``'s union of nonzero pixels in part ``q`` into row ``r`` of
    ``ulist, xv``; return how many (a partial block: see ``_block_images``).
    """
    g0, g1, g2, g3, s1, s2, s3 = _block_images(order, first, b, nb, scale, xv.dtype.type(0))
    n = np.uint64(0)
    for col in range(PART_START[q], PART_START[q + 1], LANES):
        n += gather_union16(images, g0, g1, g2, g3, col, 0, scale, s1, s2, s3, ulist, xv, r, n)
    return np.int64(n)  # signed like the loop counters: a mixed comparison goes through float64


@_jit(inline=True)
def _partial_block(HP, hr, P, ulist, xv, r, n, ACC, a):
    """``HP[hr + s] = sum_k xv[r, s, k] W0[ulist[r, k]]`` for the block's four samples.

    Each weight row is loaded once for the four (a sample's zero pixels add
    exact zeros). Two running sums per sample (in row ``a`` of ``ACC``, kept in
    registers: see ``axpy_row``) take alternate pixels, so that eight
    multiply-add chains run at once.
    """
    zero = HP.dtype.type(0)
    for u in range(8 * WIDTH):
        ACC[a, u] = zero
    k = 0
    while k + 2 <= n:
        r0, r1 = W0_AT + ulist[r, k] * WIDTH, W0_AT + ulist[r, k + 1] * WIDTH
        for s in range(4):
            axpy_row(ACC, a, 2 * s * WIDTH, xv[r, s, k], P, 0, r0)
            axpy_row(ACC, a, (2 * s + 1) * WIDTH, xv[r, s, k + 1], P, 0, r1)
        k += 2
    if k < n:
        r0 = W0_AT + ulist[r, k] * WIDTH
        for s in range(4):
            axpy_row(ACC, a, 2 * s * WIDTH, xv[r, s, k], P, 0, r0)
    for s in range(4):
        add_rows(HP, hr + s, ACC, a, 2 * s * WIDTH, ACC, a, (2 * s + 1) * WIDTH)


@_jit(inline=True)
def _block_gradient(GP, q, D0, b, ulist, xv, r, n):
    """``GP[q, W0[p] - part start] += sum_s xv[r, s, k] D0[b + s]`` over the block's
    union pixels ``p``, samples in order: one load and store per gradient row."""
    start = PART_START[q] * WIDTH
    for k in range(n):
        g = ulist[r, k] * WIDTH - start
        for s in range(4):
            axpy_row(GP, q, g, xv[r, s, k], D0, b + s, 0)


@_jit(inline=True)
def _transpose_output(P, W1T):
    """``W1T[j, u] = W1[u, j]``: the output layer's rows by class, for the gradient."""
    for j in range(WIDTH):
        for u in range(WIDTH):
            W1T[j, u] = P[0, W1_AT + u * WIDTH + j]


@_jit(parallel=True)
def _first_layer(images, order, first, nb, scale, P, V, HP, D0, GP, GS, W1T, ulist, xv, counts,
                 ACC, acc, prev_nb, lr, momentum, nesterov, weight_decay, use_momentum):
    """Phase X (see the module doc): the previous batch's first-layer gradient and
    update (if ``prev_nb``), then the part's partial sums of samples
    ``order[first:first + nb]`` (if ``nb``).

    The union lists of block ``k`` of part ``q`` are row ``q * n_rows + k`` of
    ``ulist, xv`` and ``counts``, where ``n_rows = counts.shape[0] // N_PARTS``
    (with one row per part, as for inference, every block reuses it);
    ``HP``'s rows ``q * m .. q * m + nb`` hold part ``q``'s sums, ``m`` its
    rows per part.
    """
    zero = P.dtype.type(0)
    n_rows = counts.shape[0] // N_PARTS
    m = HP.shape[0] // N_PARTS
    for q in prange(N_PARTS):
        fp = flush_denormals()
        if prev_nb > 0:
            for k in range((prev_nb + 3) // 4):
                r = q * n_rows + k
                _block_gradient(GP, q, D0, 4 * k, ulist, xv, r, counts[r])
            lo, hi = PART_START[q] * WIDTH, PART_START[q + 1] * WIDTH
            _apply(P, V, P, 0, lo, hi, GP, q, lr, momentum, nesterov, weight_decay,
                   use_momentum, True)
            for i in range(hi - lo):
                GP[q, i] = zero
            if q == 0:  # the top part: fewer pixels, and less ink in MNIST's digits
                for i in range(N_SMALL):
                    acc[0, i] = GS[0, i]
                    GS[0, i] = zero
                for c in range(1, N_CHUNKS):
                    for i in range(N_SMALL):
                        acc[0, i] += GS[c, i]
                        GS[c, i] = zero
                _apply(P, V, P, 0, W1_AT, B0_AT, acc, 0, lr, momentum, nesterov, weight_decay,
                       use_momentum, True)
                for i in range(N_PARAMS - B0_AT):
                    acc[1, i] = acc[0, B0_AT - W1_AT + i]
                _apply(P, V, P, 0, B0_AT, N_PARAMS, acc, 1, lr, momentum, nesterov, zero,
                       use_momentum, True)
                _transpose_output(P, W1T)
        for b in range(0, nb, 4):
            if b + 4 * PREFETCH_AHEAD < nb:
                for i in range(4):
                    ahead = order[first + b + 4 * PREFETCH_AHEAD + i]
                    for p in range(PART_START[q], PART_START[q + 1], 64 // images.itemsize):
                        prefetch(images, ahead, p)
                    prefetch(images, ahead, PART_START[q + 1] - 1)
            r = q * n_rows + (b // 4) % n_rows
            n = _union(images, order, first, b, nb, scale, q, ulist, xv, r)
            counts[r] = n
            _partial_block(HP, q * m + b, P, ulist, xv, r, n, ACC, q)
        restore_fp_state(fp)


@_jit(parallel=True)
def _output_layer(HP, P, n1, W1T, H, Z, D0, GS, images, labels, order, first, nb, probs, loss,
                  hit, n_chunks, grads):
    """Phase Y for samples ``order[first:first + nb]`` (see the module doc).

    Without ``grads`` (inference) the probabilities go to ``probs[first + b]``
    instead and ``labels``, ``D0``, ``loss``, ``hit`` and ``GS`` are not used.
    ``D0``'s rows from ``nb`` to the next multiple of four are zeroed.
    """
    one = Z.dtype.type(1)
    zero = Z.dtype.type(0)
    nbf = Z.dtype.type(nb)
    m = HP.shape[0] // N_PARTS
    for c in prange(n_chunks):
        fp = flush_denormals()
        b_lo, b_hi = _chunk_bounds(c, nb, n_chunks)
        for b in range(b_lo, b_hi):
            if grads and first + nb + b < order.shape[0]:
                # The next batch's images, so that phase X finds them in cache
                # (fetched in phase X itself, they made it about 1.6x slower).
                ahead = order[first + nb + b]
                for p in range(0, N_PIXELS, 64 // images.itemsize):  # a 64-byte line each
                    prefetch(images, ahead, p)
                prefetch(images, ahead, N_PIXELS - 1)  # rows need not start on a line
            add_rows(H, b, HP, b, 0, HP, m + b, 0)
            add_rows(H, b, H, b, 0, P, 0, B0_AT)
            relu_row(H, b)
            copy_row(Z, b, P, 0, B1_AT)
            for u in range(n1):
                axpy_row(Z, b, 0, H[b, u], P, 0, W1_AT + u * WIDTH)
            y = labels[order[first + b]] if grads else 0
            zy = Z[b, y]
            # one vector pass: ten scalar exp calls and divisions were the
            # largest part of this phase
            top, total, best = softmax_row(Z, b, N_OUT)
            lse = top + np.log(total)
            if not grads:
                for j in range(N_OUT):
                    probs[first + b, j] = Z[b, j]
                continue
            loss[b] = lse - zy
            hit[b] = best == y
            Z[b, y] -= one
            divide_row(Z, b, nbf)  # the padding lanes stay 0 (softmax_row zeroed them)
            for u in range(WIDTH):
                D0[b, u] = zero
            for j in range(N_OUT):
                axpy_row(D0, b, 0, Z[b, j], W1T, j, 0)
            mask_row(D0, b, H, b)
            for u in range(n1):
                axpy_row(GS, c, u * WIDTH, H[b, u], Z, b, 0)
            axpy_row(GS, c, B0_AT - W1_AT, one, D0, b, 0)
            axpy_row(GS, c, B1_AT - W1_AT, one, Z, b, 0)
        if grads and b_hi == nb:  # the last chunk: the block's missing samples
            for b in range(nb, (nb + 3) // 4 * 4):
                for u in range(WIDTH):
                    D0[b, u] = zero
        restore_fp_state(fp)


@_jit()
def run_narrow(P, V, images, labels, order, batch_size, lrs, momentum, nesterov, weight_decay,
               scale, ws, n1):
    """Train every mini-batch of ``order`` by SGD; return ``(loss_sum, correct)``.

    ``P`` and ``V`` are the parameters and velocities in the flat layout of
    :func:`layout`, ``(1, N_PARAMS)``, zero in every padding lane; ``n1`` is
    the hidden width. The other arguments are as for
    :func:`._numba_kernels.run_batches` (no thread count: the phases run
    ``N_PARTS`` and ``N_CHUNKS`` ways); the scratch ``ws`` comes from
    ``numba_backend._buffers_narrow`` (its ``GP`` and ``GS`` must be zero).
    """
    W1T, HP, H, Z, D0, GP, GS, ulist, xv, counts, ACC, acc, loss, hit = ws
    dt = P.dtype.type
    probs = np.empty((1, N_OUT), P.dtype)  # never written: probabilities are not kept
    use_momentum = momentum != 0
    loss_sum = 0.0
    correct = 0
    n_total = order.shape[0]
    n_steps = (n_total + batch_size - 1) // batch_size
    _transpose_output(P, W1T)
    nb = min(batch_size, n_total)
    _first_layer(images, order, 0, nb, scale, P, V, HP, D0, GP, GS, W1T, ulist, xv, counts, ACC,
                 acc, 0, dt(0), momentum, nesterov, weight_decay, use_momentum)
    for step in range(n_steps):
        first = step * batch_size
        nb = min(batch_size, n_total - first)
        _output_layer(HP, P, n1, W1T, H, Z, D0, GS, images, labels, order, first, nb, probs,
                      loss, hit, N_CHUNKS, True)
        for q in range(nb):
            loss_sum += loss[q]
            correct += hit[q]
        following = first + batch_size
        next_nb = min(batch_size, max(n_total - following, 0))
        _first_layer(images, order, following, next_nb, scale, P, V, HP, D0, GP, GS, W1T, ulist,
                     xv, counts, ACC, acc, nb, dt(lrs[step]), momentum, nesterov, weight_decay,
                     use_momentum)
    return loss_sum, correct


@_jit()
def predict_narrow(P, images, scale, probs, ws, first, nb, n1, n_threads):
    """Probabilities of images ``first:first + nb`` into the same rows of ``probs``.

    Leaves the hidden layer (after ReLU, padded) in ``H[:nb]`` of the scratch
    ``ws`` (from ``numba_backend._buffers_narrow``, sized for at least ``nb``
    samples). Phase Y runs ``n_threads`` chunks: without gradients, the split
    changes no result.
    """
    W1T, HP, H, Z, D0, GP, GS, ulist, xv, counts, ACC, acc, loss, hit = ws
    dt = P.dtype.type
    order = np.arange(images.shape[0])
    no_labels = np.zeros(1, np.uint8)
    _transpose_output(P, W1T)
    _first_layer(images, order, first, nb, scale, P, P, HP, D0, GP, GS, W1T, ulist, xv, counts,
                 ACC, acc, 0, dt(0), dt(0), False, dt(0), False)
    _output_layer(HP, P, n1, W1T, H, Z, D0, GS, images, no_labels, order, first, nb, probs,
                  loss, hit, n_threads, False)
