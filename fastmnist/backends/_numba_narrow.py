"""Numba kernels for one narrow hidden layer (up to :data:`MAX_WIDTH` units), plain SGD.

At ten hidden units the general kernels (:mod:`._numba_kernels`) spend most of
a step on per-pixel bookkeeping, not arithmetic: their vector loops run over the
layer's columns, and ten columns fill no register. Here the vector dimension is
the pixels instead, and zeros are not skipped (no pixel lists to build). Rows of
pixels are padded with zeros to :data:`N_COLS`.

A. ``_narrow_forward``, over samples in blocks of four: the scaled pixels go to
   ``XF[b]``, then ``H[b, j] = b0[j] + XF[b] . W0T[j]`` (four samples by two
   units per pass), then the output layer, softmax, cross-entropy and the
   gradient back to the hidden layer, by the same inlined helper as the general
   kernels. Last, the first layer's gradient of each of the batch's
   :data:`N_CHUNKS` chunks, ``GC[c * width + j] = sum_b D0[b, j] * XF[b]``, by
   the thread that wrote the chunk's rows of ``XF``.
B. ``_narrow_update``, over pixel ranges: thread ``t`` owns a contiguous range
   of pixels (whole groups of :data:`GROUP`), adds up the chunks' gradients
   there in chunk order and applies SGD to those columns of ``W0T``. The last
   thread then does the first bias, the output layer's rows and its bias.

Why chunks: phase B used to sum ``XF`` over the whole batch for its pixel range,
so each thread read half its rows of ``XF`` from the other core's cache, and with
two threads that phase ran hardly faster than with one. A chunk's gradient is
read across cores instead, ``width x N_COLS`` values whatever the batch size.

The first layer is kept transposed (``W0T`` is ``(width, N_COLS)``) for the whole
epoch; the caller copies it back. Chunks, passes and the order of every sum are
fixed by the batch alone, so results are bit-identical for any thread count, as
in the general kernels.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..numerics import N_PIXELS
from ._fpenv import flush_denormals, restore_fp_state
from ._jit import jit as _jit
from ._numba_kernels import BAND, N_OUT, _apply, _bias_grad, _layer_row, _output_sample
from ._prefetch import prefetch

#: The widest hidden layer this path takes; wider ones go to the general kernels,
#: whose column loops then fill registers.
MAX_WIDTH = 16

#: Pixels are handled in groups of 32 (four AVX registers of float32): rows of
#: pixels are padded with zeros to ``N_COLS``, a multiple of 32, so that vector
#: loops over a row leave no remainder, and threads own whole groups, so that each
#: pixel's update runs through the same vector code whatever the thread count.
GROUP = 32
N_COLS = -(-N_PIXELS // GROUP) * GROUP
N_GROUPS = N_COLS // GROUP

#: Chunks of a batch whose first-layer gradients are summed apart (whole blocks of
#: four samples each). As many as this machine has cores: with two threads each
#: sums one chunk. Fixed, not the thread count, so that results do not depend on it.
N_CHUNKS = 2

#: Images requested this many samples before they are copied (see _prefetch).
PREFETCH_AHEAD = 8


@_jit(inline=True)
def _chunk_bounds(c, nb):
    """Samples ``[lo, hi)`` of chunk ``c`` of a batch of ``nb``: whole blocks of four."""
    n_blocks = (nb + 3) // 4
    return 4 * (c * n_blocks // N_CHUNKS), min(4 * ((c + 1) * n_blocks // N_CHUNKS), nb)


@_jit(inline=True)
def _store_four(H, b, j, b0, s0, s1, s2, s3):
    """``H[b + i, j] = b0[j] + s_i`` for the four samples of a pass."""
    H[b, j] = b0[0, j] + s0
    H[b + 1, j] = b0[0, j] + s1
    H[b + 2, j] = b0[0, j] + s2
    H[b + 3, j] = b0[0, j] + s3


@_jit(parallel=True)
def _narrow_forward(images, order, first, nb, scale, XF, W0T, b0, H, W1, b1, W1T, Z, D0, labels,
                    probs, loss, hit, sidx, sval, GC, n_threads, grads):
    """Phase A for samples ``order[first:first + nb]`` (see the module doc).

    Without ``grads`` (inference) the probabilities go to ``probs[first + b]``
    instead and ``labels``, ``D0``, ``loss``, ``hit`` and ``GC`` are not used.
    """
    n1 = W0T.shape[0]
    zero = XF.dtype.type(0)
    n_blocks = (nb + 3) // 4
    for t in prange(n_threads):
        fp = flush_denormals()
        # Shares of whole blocks of four: which samples share a pass must not
        # depend on the thread count, or their sums would round differently.
        b_lo = 4 * (t * n_blocks // n_threads)
        b_hi = min(4 * ((t + 1) * n_blocks // n_threads), nb)
        # All the share's images first: each is a fresh, random place in memory,
        # and back-to-back copies keep several of them in flight at once.
        for b in range(b_lo, b_hi):
            if b + PREFETCH_AHEAD < b_hi:
                ahead = order[first + b + PREFETCH_AHEAD]
                for p in range(0, N_PIXELS, 64 // images.itemsize):  # a 64-byte line each
                    prefetch(images, ahead, p)
                prefetch(images, ahead, N_PIXELS - 1)  # rows need not start on a line
            g = order[first + b]
            for p in range(N_PIXELS):
                XF[b, p] = images[g, p] * scale
        # Four samples by two units per pass: each load of W0T serves four sums and
        # each load of XF two. (W0T fills L1 by itself at 10 units, so the four rows
        # of XF come from L2 on every pass; by units one at a time, 784-10-10 ran
        # about 8% slower side by side.)
        b = b_lo
        while b + 4 <= b_hi:
            j = 0
            while j + 2 <= n1:
                s0, s1, s2, s3 = zero, zero, zero, zero
                r0, r1, r2, r3 = zero, zero, zero, zero
                for p in range(N_COLS):  # the padding is zero in both
                    w, v = W0T[j, p], W0T[j + 1, p]
                    x0, x1, x2, x3 = XF[b, p], XF[b + 1, p], XF[b + 2, p], XF[b + 3, p]
                    s0 += x0 * w
                    s1 += x1 * w
                    s2 += x2 * w
                    s3 += x3 * w
                    r0 += x0 * v
                    r1 += x1 * v
                    r2 += x2 * v
                    r3 += x3 * v
                _store_four(H, b, j, b0, s0, s1, s2, s3)
                _store_four(H, b, j + 1, b0, r0, r1, r2, r3)
                j += 2
            if j < n1:  # an odd width's last unit
                s0, s1, s2, s3 = zero, zero, zero, zero
                for p in range(N_COLS):
                    w = W0T[j, p]
                    s0 += XF[b, p] * w
                    s1 += XF[b + 1, p] * w
                    s2 += XF[b + 2, p] * w
                    s3 += XF[b + 3, p] * w
                _store_four(H, b, j, b0, s0, s1, s2, s3)
            b += 4
        while b < b_hi:
            for j in range(n1):
                s0 = zero
                for p in range(N_COLS):
                    s0 += XF[b, p] * W0T[j, p]
                H[b, j] = b0[0, j] + s0
            b += 1
        for b in range(b_lo, b_hi):
            _output_sample(H, W1, b1, W1T, Z, D0, True, grads, not grads, labels, order, first,
                           nb, probs, loss, hit, sidx, sval, t, b)
        if grads:
            # With as many threads as chunks, thread t's chunk is its own share.
            for c in range(t * N_CHUNKS // n_threads, (t + 1) * N_CHUNKS // n_threads):
                _chunk_gradient(XF, D0, GC, c, nb, sidx, sval, t)
        restore_fp_state(fp)


@_jit(inline=True)
def _chunk_gradient(XF, D0, GC, c, nb, sidx, sval, t):
    """``GC[c * width + j] = sum_b D0[b, j] * XF[b]`` over chunk ``c``'s samples.

    For each unit, the samples whose delta ReLU left nonzero, ascending, four per
    pass over the row (one load and store of ``GC`` per four multiply-adds). The
    passes run over all ``N_COLS`` pixels, the same vector code for any chunk.
    """
    zero = GC.dtype.type(0)
    n1 = D0.shape[1]
    b_lo, b_hi = _chunk_bounds(c, nb)
    n_cols = np.uint64(N_COLS)  # unsigned: see _numba_kernels._acc_rows
    for j in range(n1):
        r = c * n1 + j
        for p in range(n_cols):
            GC[r, p] = zero
        m = np.uint64(0)  # unsigned: see _numba_kernels._relu_gather
        for b in range(b_lo, b_hi):
            d = D0[b, j]
            sidx[t, m] = b
            sval[t, m] = d
            m += np.uint64(d != zero)
        k = np.uint64(0)
        while k + np.uint64(4) <= m:
            c0, c1, c2, c3 = sidx[t, k], sidx[t, k + 1], sidx[t, k + 2], sidx[t, k + 3]
            d0, d1, d2, d3 = sval[t, k], sval[t, k + 1], sval[t, k + 2], sval[t, k + 3]
            for p in range(n_cols):
                GC[r, p] += d0 * XF[c0, p] + d1 * XF[c1, p] + d2 * XF[c2, p] + d3 * XF[c3, p]
            k += np.uint64(4)
        while k < m:
            c0, d0 = sidx[t, k], sval[t, k]
            for p in range(n_cols):
                GC[r, p] += d0 * XF[c0, p]
            k += np.uint64(1)


@_jit(parallel=True)
def _narrow_update(nb, GC, D0, W0T, VW0T, b0, Vb0, H, Z, W1, VW1, b1, Vb1, W1T, GT, acc, sidx,
                   sval, lr, momentum, nesterov, weight_decay, use_momentum, n_threads):
    """Phase B: gradients and SGD for every parameter (see the module doc)."""
    n1 = W0T.shape[0]
    zero = W0T.dtype.type(0)
    for t in prange(n_threads):
        fp = flush_denormals()
        p_lo = t * N_GROUPS // n_threads * GROUP
        p_hi = (t + 1) * N_GROUPS // n_threads * GROUP
        # Unsigned bounds: see _numba_kernels._acc_rows.
        pa, pb = np.uint64(p_lo), np.uint64(p_hi)
        r0 = t * n1  # this thread's rows of GT; column p - p_lo is pixel p
        for j in range(n1):
            for p in range(pa, pb):
                GT[r0 + j, p - pa] = GC[j, p]
            for c in range(1, N_CHUNKS):
                for p in range(pa, pb):
                    GT[r0 + j, p - pa] += GC[c * n1 + j, p]
        for j in range(n1):
            _apply(W0T, VW0T, W0T, j, p_lo, p_hi, GT, r0 + j, lr, momentum, nesterov,
                   weight_decay, use_momentum, True)
        if t == n_threads - 1:
            c = t * BAND  # this thread's rows of acc
            _bias_grad(D0, nb, acc, c, 0, n1)
            _apply(b0, Vb0, b0, 0, 0, n1, acc, c, lr, momentum, nesterov, zero, use_momentum,
                   True)
            for i in range(n1):
                _layer_row(H, Z, W1, VW1, W1, W1T, i, N_OUT, nb, acc, c, sidx, sval, t, lr,
                           momentum, nesterov, weight_decay, use_momentum, True)
            _bias_grad(Z, nb, acc, c, 0, N_OUT)
            _apply(b1, Vb1, b1, 0, 0, N_OUT, acc, c, lr, momentum, nesterov, zero, use_momentum,
                   True)
        restore_fp_state(fp)


@_jit()
def run_narrow(W0T, VW0T, b0, Vb0, W1, VW1, b1, Vb1, W1T, images, labels, order, batch_size, lrs,
               momentum, nesterov, weight_decay, scale, ws, n_threads):
    """Train every mini-batch of ``order`` by SGD; return ``(loss_sum, correct)``.

    ``W0T, VW0T`` are the first layer's weights and velocities transposed and
    padded with zero columns, ``(width, N_COLS)``; biases are ``(1, n)``; ``W1T``
    must hold ``W1.T``. The other arguments are as for
    :func:`._numba_kernels.run_batches`; the scratch ``ws`` comes from
    ``numba_backend._buffers_narrow`` (the padding columns of its ``XF`` must be
    zero).
    """
    XF, H, Z, D0, GT, GC, acc, sidx, sval, loss, hit = ws
    dt = W0T.dtype.type
    probs = np.empty((1, N_OUT), W0T.dtype)  # never written: probabilities are not kept
    use_momentum = momentum != 0
    loss_sum = 0.0
    correct = 0
    n_total = order.shape[0]
    for step in range((n_total + batch_size - 1) // batch_size):
        first = step * batch_size
        nb = min(batch_size, n_total - first)
        _narrow_forward(images, order, first, nb, scale, XF, W0T, b0, H, W1, b1, W1T, Z, D0,
                        labels, probs, loss, hit, sidx, sval, GC, n_threads, True)
        for q in range(nb):
            loss_sum += loss[q]
            correct += hit[q]
        _narrow_update(nb, GC, D0, W0T, VW0T, b0, Vb0, H, Z, W1, VW1, b1, Vb1, W1T, GT, acc,
                       sidx, sval, dt(lrs[step]), momentum, nesterov, weight_decay, use_momentum,
                       n_threads)
    return loss_sum, correct


@_jit()
def predict_narrow(W0T, b0, W1, b1, W1T, images, scale, probs, ws, first, nb, n_threads):
    """Probabilities of images ``first:first + nb`` into the same rows of ``probs``.

    Leaves the hidden layer (after ReLU) in ``H[:nb]`` of the scratch ``ws``
    (from ``numba_backend._buffers_narrow``, sized for at least ``nb`` samples).
    """
    XF, H, Z, D0, GT, GC, acc, sidx, sval, loss, hit = ws
    order = np.arange(images.shape[0])
    no_labels = np.zeros(1, np.uint8)
    _narrow_forward(images, order, first, nb, scale, XF, W0T, b0, H, W1, b1, W1T, Z, D0,
                    no_labels, probs, loss, hit, sidx, sval, GC, n_threads, False)
