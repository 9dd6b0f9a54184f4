"""Numba kernels for one narrow hidden layer (up to :data:`WIDTH` units), plain SGD.

At ten hidden units the general kernels (:mod:`._numba_kernels`) spend most of
a step on bookkeeping, not arithmetic: their column loops are ten long, which
fills no vector register. Here every row of every layer is padded with zeros
to :data:`WIDTH` lanes, one AVX-512 register of float32, and each row
operation is one vector multiply-add (``_rows16.axpy_row``). A pixel's
first-layer weights are one such row, so an image's nonzero pixels (about 150
of 784 on MNIST, listed sixteen at a time by ``_compress``) select the rows it
needs, in the forward pass and in the gradient.

All parameters live in one flat row ``P`` (:func:`layout`): the first layer
``W0`` (784 rows of ``WIDTH``), the output layer ``W1`` (``WIDTH`` rows of
``WIDTH``: hidden unit by class), then the two biases. Their velocities ``V``
and the gradients of each chunk of the batch (``GC[c]``) have the same layout,
so one elementwise loop updates every parameter.

A. ``_narrow_forward``, over the :data:`N_CHUNKS` chunks of the batch, one
   sample at a time: list the image's nonzero pixels; the hidden layer (four
   running sums in registers, added pairwise), ReLU, the logits, softmax and
   cross-entropy; then the gradient: back to the hidden layer and, while the
   sample is in cache, added into the chunk's gradient row: the pixel list's
   rows of ``W0``, the fired units' rows of ``W1``, both biases.
B. ``_narrow_update``, over ranges of ``P``: each thread adds up the chunks'
   gradients in chunk order, zeroes them for the next batch and applies SGD.

The output layer's transposed copy ``W1T`` (for the gradient back to the
hidden layer) is rebuilt from ``P`` after each update. Skipping zero pixels is
exact for finite weights, as in the general kernels; on dense inputs every
pixel is listed and the work is that of a dense product. Chunks are fixed by
the batch, not the thread count, and every sum runs in an order fixed by the
data, so results are bit-identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..numerics import N_PIXELS
from ._compress import gather_union16
from ._fpenv import flush_denormals, restore_fp_state
from ._jit import jit as _jit
from ._numba_kernels import N_OUT, _apply, _softmax_xent
from ._prefetch import prefetch
from ._rows16 import LANES, axpy_row

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

#: Chunks of a batch whose gradients are summed apart (whole blocks of four
#: samples each). As many as this machine has cores: with two threads each does
#: one chunk. Fixed, not the thread count, so that results do not depend on it.
N_CHUNKS = 2

#: Elements of ``P`` updated per pass in phase B (the chunks' sum is kept in
#: ``acc`` between the two loops).
UPDATE_BLOCK = 1024

#: Images requested this many samples before they are listed (see _prefetch):
#: each is a fresh, random place in memory.
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
def _hidden_block(H, b, P, ulist, xv, t, n, ACC, a):
    """``H[b + s] = relu(b0 + sum_k xv[t, s, k] W0[ulist[t, k]])`` for the block's four samples.

    Each weight row of the union's ``n`` pixels is loaded once for the four
    samples (a sample's zero pixels add exact zeros). Two running sums per
    sample (in row ``a`` of ``ACC``, kept in registers: see ``axpy_row``) take
    alternate pixels, so that eight multiply-add chains run at once. NaN
    passes ReLU.
    """
    zero = H.dtype.type(0)
    for u in range(8 * WIDTH):
        ACC[a, u] = zero
    k = 0
    while k + 2 <= n:
        r0, r1 = W0_AT + ulist[t, k] * WIDTH, W0_AT + ulist[t, k + 1] * WIDTH
        for s in range(4):
            axpy_row(ACC, a, 2 * s * WIDTH, xv[t, s, k], P, 0, r0)
            axpy_row(ACC, a, (2 * s + 1) * WIDTH, xv[t, s, k + 1], P, 0, r1)
        k += 2
    if k < n:
        r0 = W0_AT + ulist[t, k] * WIDTH
        for s in range(4):
            axpy_row(ACC, a, 2 * s * WIDTH, xv[t, s, k], P, 0, r0)
    for s in range(4):
        for u in range(WIDTH):
            h = (ACC[a, 2 * s * WIDTH + u] + ACC[a, (2 * s + 1) * WIDTH + u]) + P[0, B0_AT + u]
            H[b + s, u] = zero if h <= zero else h


@_jit(inline=True)
def _output_row(H, b, P, n1, Z):
    """Logits ``Z[b] = b1 + sum_u H[b, u] W1[u]`` (padding lanes zero)."""
    for j in range(WIDTH):
        Z[b, j] = P[0, B1_AT + j]
    for u in range(n1):
        axpy_row(Z, b, 0, H[b, u], P, 0, W1_AT + u * WIDTH)


@_jit(inline=True)
def _hidden_gradient(H, b, n1, W1T, Z, D0, GC, c):
    """``D0[b] = dLoss/dH`` of sample ``b`` from ``Z[b] = dLoss/dlogits`` (padding zero),
    zero where ReLU was off; the output layer's and both biases' gradients go
    into the chunk's row ``GC[c]``."""
    zero = D0.dtype.type(0)
    one = D0.dtype.type(1)
    for u in range(WIDTH):
        D0[b, u] = zero
    for j in range(N_OUT):
        axpy_row(D0, b, 0, Z[b, j], W1T, j, 0)
    for u in range(WIDTH):
        D0[b, u] = D0[b, u] if H[b, u] > zero else zero
    for u in range(n1):
        axpy_row(GC, c, W1_AT + u * WIDTH, H[b, u], Z, b, 0)
    axpy_row(GC, c, B0_AT, one, D0, b, 0)
    axpy_row(GC, c, B1_AT, one, Z, b, 0)


@_jit(inline=True)
def _first_layer_gradient(GC, c, D0, b, ulist, xv, t, n):
    """``GC[c, W0[p]] += sum_s xv[t, s, k] D0[b + s]`` over the block's union pixels ``p``,
    samples in order: one load and store of each gradient row per block."""
    for k in range(n):
        r = W0_AT + ulist[t, k] * WIDTH
        for s in range(4):
            axpy_row(GC, c, r, xv[t, s, k], D0, b + s, 0)


@_jit(parallel=True)
def _narrow_forward(images, order, first, nb, scale, P, n1, W1T, H, Z, D0, labels, probs, loss,
                    hit, ulist, xv, GC, ACC, n_chunks, grads):
    """Phase A for samples ``order[first:first + nb]`` (see the module doc).

    Without ``grads`` (inference) the probabilities go to ``probs[first + b]``
    instead and ``labels``, ``D0``, ``loss``, ``hit`` and ``GC`` are not used.
    ``H``, ``Z`` and ``D0`` need ``nb`` rounded up to a multiple of four rows.
    """
    one = Z.dtype.type(1)
    zero = Z.dtype.type(0)
    nbf = Z.dtype.type(nb)
    for c in prange(n_chunks):
        fp = flush_denormals()
        b_lo, b_hi = _chunk_bounds(c, nb, n_chunks)
        for b in range(b_lo, b_hi, 4):
            if b + 4 * PREFETCH_AHEAD < b_hi:
                for i in range(4):
                    ahead = order[first + b + 4 * PREFETCH_AHEAD + i]
                    for p in range(0, N_PIXELS, 64 // images.itemsize):  # a 64-byte line each
                        prefetch(images, ahead, p)
                    prefetch(images, ahead, N_PIXELS - 1)  # rows need not start on a line
            # A block short of four samples repeats its first image at scale 0:
            # the union is unchanged and the missing samples' values are zero.
            n_real = min(4, b_hi - b)
            g0 = order[first + b]
            g1 = order[first + b + 1] if n_real > 1 else g0
            g2 = order[first + b + 2] if n_real > 2 else g0
            g3 = order[first + b + 3] if n_real > 3 else g0
            s1 = scale if n_real > 1 else zero
            s2 = scale if n_real > 2 else zero
            s3 = scale if n_real > 3 else zero
            nu = np.uint64(0)
            for col in range(0, N_PIXELS, LANES):
                nu += gather_union16(images, g0, g1, g2, g3, col, 0, scale, s1, s2, s3, ulist, xv,
                                     c, nu)
            n = np.int64(nu)  # signed like k: a mixed comparison would go through float64
            _hidden_block(H, b, P, ulist, xv, c, n, ACC, c)
            for s in range(4):
                if s >= n_real:
                    for u in range(WIDTH):
                        D0[b + s, u] = zero
                    continue
                bs = b + s
                _output_row(H, bs, P, n1, Z)
                y = labels[order[first + bs]] if grads else 0
                zy = Z[bs, y]
                lse, best = _softmax_xent(Z, bs)
                if not grads:
                    for j in range(N_OUT):
                        probs[first + bs, j] = Z[bs, j]
                    continue
                loss[bs] = lse - zy
                hit[bs] = best == y
                Z[bs, y] -= one
                for j in range(N_OUT):
                    Z[bs, j] = Z[bs, j] / nbf
                for j in range(N_OUT, WIDTH):
                    Z[bs, j] = zero
                _hidden_gradient(H, bs, n1, W1T, Z, D0, GC, c)
            if grads:
                _first_layer_gradient(GC, c, D0, b, ulist, xv, c, n)
        restore_fp_state(fp)


@_jit(parallel=True)
def _narrow_update(GC, P, V, acc, lr, momentum, nesterov, weight_decay, use_momentum, n_threads):
    """Phase B: sum the chunks' gradients, zero them, one SGD step (see the module doc).

    Weight decay applies to the weights, not the biases, as in the reference.
    """
    zero = P.dtype.type(0)
    n_rows = N_PARAMS // WIDTH
    for t in prange(n_threads):
        fp = flush_denormals()
        lo = t * n_rows // n_threads * WIDTH
        hi = (t + 1) * n_rows // n_threads * WIDTH
        o = lo
        while o < hi:
            end = min(o + UPDATE_BLOCK, hi)
            if o < B0_AT:
                end = min(end, B0_AT)
            ua, ub = np.uint64(o), np.uint64(end)  # unsigned: see _numba_kernels._acc_rows
            for i in range(ua, ub):
                acc[t, i - ua] = GC[0, i]
                GC[0, i] = zero
            for c in range(1, N_CHUNKS):
                for i in range(ua, ub):
                    acc[t, i - ua] += GC[c, i]
                    GC[c, i] = zero
            decay = weight_decay if o < B0_AT else zero
            _apply(P, V, P, 0, o, end, acc, t, lr, momentum, nesterov, decay, use_momentum, True)
            o = end
        restore_fp_state(fp)


@_jit(inline=True)
def _transpose_output(P, W1T):
    """``W1T[j, u] = W1[u, j]``: the output layer's rows by class, for the gradient."""
    for j in range(WIDTH):
        for u in range(WIDTH):
            W1T[j, u] = P[0, W1_AT + u * WIDTH + j]


@_jit()
def run_narrow(P, V, images, labels, order, batch_size, lrs, momentum, nesterov, weight_decay,
               scale, ws, n1, n_threads):
    """Train every mini-batch of ``order`` by SGD; return ``(loss_sum, correct)``.

    ``P`` and ``V`` are the parameters and velocities in the flat layout of
    :func:`layout`, ``(1, N_PARAMS)``, zero in every padding lane; ``n1`` is
    the hidden width. The other arguments are as for
    :func:`._numba_kernels.run_batches`; the scratch ``ws`` comes from
    ``numba_backend._buffers_narrow`` (its ``GC`` must be zero).
    """
    W1T, H, Z, D0, GC, ACC, acc, ulist, xv, loss, hit = ws
    dt = P.dtype.type
    probs = np.empty((1, N_OUT), P.dtype)  # never written: probabilities are not kept
    use_momentum = momentum != 0
    loss_sum = 0.0
    correct = 0
    n_total = order.shape[0]
    _transpose_output(P, W1T)
    for step in range((n_total + batch_size - 1) // batch_size):
        first = step * batch_size
        nb = min(batch_size, n_total - first)
        _narrow_forward(images, order, first, nb, scale, P, n1, W1T, H, Z, D0, labels, probs,
                        loss, hit, ulist, xv, GC, ACC, N_CHUNKS, True)
        for q in range(nb):
            loss_sum += loss[q]
            correct += hit[q]
        _narrow_update(GC, P, V, acc, dt(lrs[step]), momentum, nesterov, weight_decay,
                       use_momentum, n_threads)
        _transpose_output(P, W1T)
    return loss_sum, correct


@_jit()
def predict_narrow(P, images, scale, probs, ws, first, nb, n1, n_threads):
    """Probabilities of images ``first:first + nb`` into the same rows of ``probs``.

    Leaves the hidden layer (after ReLU, padded) in ``H[:nb]`` of the scratch
    ``ws`` (from ``numba_backend._buffers_narrow``, sized for at least ``nb``
    samples). Samples are split among ``n_threads`` chunks: without gradients,
    the split changes no result.
    """
    W1T, H, Z, D0, GC, ACC, acc, ulist, xv, loss, hit = ws
    order = np.arange(images.shape[0])
    no_labels = np.zeros(1, np.uint8)
    _narrow_forward(images, order, first, nb, scale, P, n1, W1T, H, Z, D0, no_labels, probs,
                    loss, hit, ulist, xv, GC, ACC, n_threads, False)
