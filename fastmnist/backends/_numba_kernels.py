"""Numba kernels behind :class:`~fastmnist.backends.numba_backend.NumbaBackend`.

Nothing here is compiled at import: every function is a lazy ``@njit``
dispatcher that compiles on its first call or loads from Numba's on-disk cache.

Design
------
A network has ``L`` layers of widths ``n[0] = 784, ..., n[L] = 10``. The
drivers (:func:`run_batches`, :func:`predict`) loop over mini-batches in
compiled code. A training step of a one-hidden-layer network is four stages,
run as two parallel phases (``prange`` over threads), each ending in a barrier:

A1. ``_first_layer_part``, per :data:`N_PARTS` pixel part (the top and
    bottom fourteen image rows). For every block of four samples, the part's
    thread lists the part's pixels that are nonzero in any of the four (their
    union; about 300 of 784 on MNIST in all, every pixel on dense inputs;
    sixteen pixels per instruction, see ``_compress``) and sums the part's
    share of the block's first layer, 64 columns of the four samples at a
    time held in registers (each loaded weight serves four samples; the sums
    are stored once per tile).
A2. ``_combine_sample``: bias plus the parts' shares, in order.
A3. ``_phase_a``, over samples: A2, then per sample the last layer, softmax +
    cross-entropy + its gradient, and the gradient back through the last layer.
B.  ``_phase_b``, over the pixel parts again: each part's thread sums the
    gradient of its part's rows of the first layer, band of 28 rows (one image
    row) by band, over its own union lists (four samples per pass), and updates
    each row by SGD at once, while it is in cache; the first part's thread also
    does the last layer, column by column, the last part's the first bias.
    Then each part's thread goes on to A1 of the next batch (the first step's
    A1 runs alone, in ``_first_layer_parts``).

A part's rows of ``W0`` are read and written by one thread only, so they stay
in that core's cache all epoch. (Before, phase A split the batch by samples,
so every thread read all of ``W0`` that the other had just updated in phase B,
and each step moved half of ``W0`` across cores: side by side, 784-128-10 b32
ran 1.3x and 784-512-10 b32-b128 1.35-1.5x slower on two threads.) The price
is two sums per first-layer output instead of one and, with more threads than
parts, idle threads in A1 and B. Inference runs ``_phase_a`` alone: each
sample's first layer sums the weight rows of its own nonzero pixels (about
150), four per pass, with the output layer in the same phase.

Deeper networks add, per middle layer, a forward and a backward phase over
samples (``_forward_hidden``, ``_backward_hidden``) and an update phase over
rows (``_update_layer``). The backward product ``delta @ W.T`` reads a
transposed copy of ``W`` that the update phase keeps in step, so it is again a
sum of contiguous rows.

Determinism: no thread writes what another reads in the same phase, and the
only sums split in parts (the first layer's, by pixel part) are split the
same way for any thread count. Every sum runs in an order fixed by the data,
so results are bit-identical for any thread count.

The parallel bodies index only arrays passed in whole (no views, no tuple
lookups), which lets Numba mark them ``noalias``: LLVM then vectorises inner
loops without runtime overlap checks. One view anywhere in a parallel body
(even ``W.T``) makes Numba drop the marks of all its arrays; the marks show on
the ``define`` line of the ``__numba_parfor_gufunc`` in ``inspect_llvm()``.
Helpers are ``inline="always"`` for the same reason and to keep reference
counting out of hot loops. Inner loops run over unsigned column ranges (see
:func:`_acc_rows`).

Skipping zero terms (pixels outside the union, units ReLU zeroed, gradients
ReLU zeroed) is exact for finite values. With an Inf or NaN weight the
reference gets NaN from ``0 * Inf`` where a skipped term gives nothing, but
then the loss is non-finite either way.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..numerics import N_CLASSES
from ._batch_order import by_label_within_batches
from ._compress import LANES, gather_nonzero16, gather_union16
from ._fpenv import flush_denormals, restore_fp_state
from ._jit import jit as _jit

#: Width of the output layer, a compile-time constant so its loops unroll.
N_OUT = N_CLASSES

#: Pixels are handled in bands of one image row; the first layer's weight rows
#: are dealt to threads band by band.
BAND = 28
N_BANDS = 28

#: Columns of the first layer done per pass: a 784 x TILE slab of W_0 (400 kB in
#: float32) stays in L2 while every block uses it.
TILE = 128

#: In training the first layer's rows are split into this many parts of whole
#: bands (the top and bottom of the image). Each part's thread sums its pixels'
#: share of every sample's first layer and computes and updates its rows of
#: ``W0``, so those rows never leave its core. Fixed, not the thread count, so
#: that sums are split alike for any thread count.
N_PARTS = 2
BANDS_PER_PART = N_BANDS // N_PARTS

#: Columns of the first layer done per pass over a block's union pixels. In the
#: gradient, the band's 28 gradient rows (7 kB in float32) stay in L1. A full
#: tile runs a loop of this compile-time length, which LLVM unrolls, so that a
#: block's four rows of delta (gradient) or of output sums (forward) stay in
#: registers, 16 zmm, across the union instead of being reloaded for every
#: pixel. Side by side, alternating runs, 2 threads: the gradient a median
#: 8-18% faster at 784-128-10 and 784-512-10, b32-b128; the forward 4-6% at
#: b64-b128 and level at b32 (README, Performance).
TILE_GRAD = 64


# ---------------------------------------------------------------------------
# Inlined helpers. They index whole arrays with (row, column) so that loops
# over columns run from a known-nonnegative start and vectorise.
# ---------------------------------------------------------------------------


@_jit(inline=True)
def _acc_rows(Z, zr, j0, j1, W, idx, val, r, k0, k1):
    """``Z[zr, j0:j1] += sum_{k0 <= k < k1} val[r, k] * W[idx[r, k], j0:j1]``, k ascending.

    Four rows of ``W`` per pass, so each load and store of ``Z`` serves four FMAs.
    """
    # Unsigned column bounds: LLVM cannot prove a signed j0 + j >= 0 (Numba's
    # integer ops carry no no-wrap flags), so it would keep the negative-index
    # check in the loop and not vectorise it.
    ja, jb = np.uint64(j0), np.uint64(j1)
    k = k0
    while k + 4 <= k1:
        i0, i1, i2, i3 = idx[r, k], idx[r, k + 1], idx[r, k + 2], idx[r, k + 3]
        v0, v1, v2, v3 = val[r, k], val[r, k + 1], val[r, k + 2], val[r, k + 3]
        for j in range(ja, jb):
            Z[zr, j] += v0 * W[i0, j] + v1 * W[i1, j] + v2 * W[i2, j] + v3 * W[i3, j]
        k += 4
    while k < k1:
        i0, v0 = idx[r, k], val[r, k]
        for j in range(ja, jb):
            Z[zr, j] += v0 * W[i0, j]
        k += 1


@_jit(inline=True)
def _flag(value):
    """``value`` as a plain run-time bool.

    Numba types a constant argument (``True``, ``0``) as a literal and compiles
    the called kernel once per literal value. With the switches of
    :func:`_forward_batch` and :func:`_phase_a` passed as literals, a cold start
    compiled the first twice and the second four times: 784-32-10 float32
    took 75 s to compile for training and 27 s more for inference, against
    67 s and 2.4 s with run-time switches (one process, empty cache). A run-time
    switch is a well-predicted branch; training and inference ran as fast as
    before (alternating processes, 784-128-10 b128: 0.99x and 1.02x, within noise).
    """
    return bool(value)


@_jit(inline=True)
def _relu_gather(A, b, idx, val, t):
    """ReLU row ``b`` of ``A`` in place; list its nonzeros in ``idx[t], val[t]``, return how many.

    NaN passes through ReLU (as with ``np.maximum``) so divergence stays visible.
    The list is written branch-free: every entry lands at the current end, and
    the end only moves past nonzeros.
    """
    zero = A.dtype.type(0)
    m = np.uint64(0)  # unsigned: no negative-index check on every store
    for i in range(A.shape[1]):
        # A select, not a branch: whether a unit fired is a coin flip to the predictor.
        a = zero if A[b, i] <= zero else A[b, i]
        A[b, i] = a
        idx[t, m] = i
        val[t, m] = a
        m += np.uint64(a != zero)
    return np.int64(m)


@_jit(inline=True)
def _nonzero_gather(D, b, scale, idx, val, t):
    """List the nonzeros of row ``b`` of ``D``, times ``scale``, in ``idx[t], val[t]``.

    Returns how many there are.
    """
    zero = D.dtype.type(0)
    m = np.uint64(0)  # unsigned: see _relu_gather
    for j in range(D.shape[1]):
        d = D[b, j]
        idx[t, m] = j
        val[t, m] = d * scale
        m += np.uint64(d != zero)
    return np.int64(m)


@_jit(inline=True)
def _pixel_gather(images, g, scale, idx, val, t):
    """:func:`_nonzero_gather` for image ``g``, :data:`LANES` pixels at a time."""
    n_pixels = images.shape[1]
    m = np.uint64(0)
    c = 0
    while c + LANES <= n_pixels:
        m += gather_nonzero16(images, g, c, scale, idx, val, t, m)
        c += LANES
    for j in range(c, n_pixels):
        x = images[g, j]
        idx[t, m] = j
        val[t, m] = x * scale
        m += np.uint64(x != 0)
    return np.int64(m)


@_jit(inline=True)
def _backprop_row(D, WT, A, Dprev, b, sidx, sval, t):
    """``Dprev[b] = (D[b] WT) * (A[b] > 0)``, over the rows of ``WT`` where ``D[b] != 0`` only."""
    zero = Dprev.dtype.type(0)
    n_in = Dprev.shape[1]
    for i in range(n_in):
        Dprev[b, i] = zero
    m = _nonzero_gather(D, b, Dprev.dtype.type(1), sidx, sval, t)
    _acc_rows(Dprev, b, 0, n_in, WT, sidx, sval, t, 0, m)
    for i in range(n_in):
        Dprev[b, i] = Dprev[b, i] if A[b, i] > zero else zero


@_jit(inline=True)
def _softmax_xent(Z, b):
    """Logits ``Z[b]`` -> probabilities in place; return (loss without ``-z[y]``, argmax).

    The caller subtracts ``z[y]``: loss = ``logsumexp(z) - z[y]`` in the model's
    dtype, as the reference computes it. The argmax is the first maximal
    probability, as ``np.argmax`` picks.
    """
    n = N_OUT
    m = Z[b, 0]
    for j in range(1, n):
        if Z[b, j] > m:
            m = Z[b, j]
    s = Z.dtype.type(0)
    for j in range(n):
        e = np.exp(Z[b, j] - m)
        Z[b, j] = e
        s += e
    best = 0
    for j in range(n):
        Z[b, j] = Z[b, j] / s
        if Z[b, j] > Z[b, best]:
            best = j
    return m + np.log(s), best


@_jit(inline=True)
def _apply(P, Vel, G, i, j0, j1, acc, c, lr, momentum, nesterov, decay, use_momentum, train):
    """Row ``i``, columns ``j0:j1`` of ``P`` get gradient ``acc[c, :j1 - j0]``.

    With ``train``: one SGD step as ``SGD.update_reference`` defines it (``decay``
    is the weight decay, zero for biases; without momentum the velocity ``Vel``
    is not touched). Otherwise the gradient is stored in ``G``.
    """
    ja, jb = np.uint64(j0), np.uint64(j1)  # unsigned: see _acc_rows
    if not train:
        for j in range(ja, jb):
            G[i, j] = acc[c, j - ja]
    elif use_momentum and nesterov:
        for j in range(ja, jb):
            g = acc[c, j - ja] + decay * P[i, j]
            v = momentum * Vel[i, j] + g
            Vel[i, j] = v
            P[i, j] -= lr * (g + momentum * v)
    elif use_momentum:
        for j in range(ja, jb):
            v = momentum * Vel[i, j] + (acc[c, j - ja] + decay * P[i, j])
            Vel[i, j] = v
            P[i, j] -= lr * v
    else:
        for j in range(ja, jb):
            P[i, j] -= lr * (acc[c, j - ja] + decay * P[i, j])


@_jit(inline=True)
def _bias_grad(D, nb, acc, c, j0, j1):
    """``acc[c, :j1 - j0] = sum_b D[b, j0:j1]``, b ascending."""
    ja, jb = np.uint64(j0), np.uint64(j1)  # unsigned: see _acc_rows
    for j in range(ja, jb):
        acc[c, j - ja] = 0
    b = 0
    while b + 4 <= nb:
        for j in range(ja, jb):
            acc[c, j - ja] += D[b, j] + D[b + 1, j] + D[b + 2, j] + D[b + 3, j]
        b += 4
    while b < nb:
        for j in range(ja, jb):
            acc[c, j - ja] += D[b, j]
        b += 1


@_jit(inline=True)
def _layer_row(A, D, W, VW, GW, WT, i, n_out, nb, acc, c, sidx, sval, t, lr, momentum, nesterov,
               weight_decay, use_momentum, train):
    """Row ``i`` of a later layer: gradient into ``acc[c]``, update, copy into ``WT``.

    The gradient ``sum_b A[b, i] D[b]`` runs over the samples where unit ``i``
    fired only, in ascending order, four rows of ``D`` per pass.
    """
    zero = W.dtype.type(0)
    m = np.uint64(0)  # unsigned: see _relu_gather
    for b in range(nb):
        a = A[b, i]
        sidx[t, m] = b
        sval[t, m] = a
        m += np.uint64(a != zero)
    for j in range(n_out):
        acc[c, j] = zero
    _acc_rows(acc, c, 0, n_out, D, sidx, sval, t, 0, np.int64(m))
    _apply(W, VW, GW, i, 0, n_out, acc, c, lr, momentum, nesterov, weight_decay, use_momentum,
           train)
    if train:
        for j in range(n_out):
            WT[j, i] = W[i, j]


@_jit(inline=True)
def _output_column(A, D, WT, VWT, GWT, j, nb, acc, c, lr, momentum, nesterov, weight_decay,
                   use_momentum, train):
    """Column ``j`` of the last layer, row ``j`` of its transpose ``WT``: gradient into
    ``acc[c]``, then the update of ``WT[j]`` and ``VWT[j]`` (or the gradient into ``GWT[j]``).

    The gradient ``sum_b D[b, j] A[b]`` runs over every sample, b ascending,
    four rows of ``A`` per pass and vectorised over its columns; ``A``'s zeros
    (units ReLU zeroed) add exact zeros. The last layer is ten columns wide:
    done row by row, over ``W``'s rows, a vector would be ten long, and that
    took about 15% of a 784-128-10 training step.
    """
    n_in = A.shape[1]
    ia, ib = np.uint64(0), np.uint64(n_in)  # unsigned: see _acc_rows
    for i in range(ia, ib):
        acc[c, i] = 0
    b = 0
    while b + 4 <= nb:
        d0, d1, d2, d3 = D[b, j], D[b + 1, j], D[b + 2, j], D[b + 3, j]
        for i in range(ia, ib):
            acc[c, i] += d0 * A[b, i] + d1 * A[b + 1, i] + d2 * A[b + 2, i] + d3 * A[b + 3, i]
        b += 4
    while b < nb:
        d0 = D[b, j]
        for i in range(ia, ib):
            acc[c, i] += d0 * A[b, i]
        b += 1
    _apply(WT, VWT, GWT, j, 0, n_in, acc, c, lr, momentum, nesterov, weight_decay,
           use_momentum, train)


@_jit(inline=True)
def _block_images(order, first, b, nb, scale, zero):
    """The images of samples ``b .. b + 3`` and the scales of the last three.

    A block short of four samples repeats its first image at scale ``zero``: a
    union over it is unchanged and the missing samples' values are zero.
    """
    present = min(4, nb - b)
    g0 = order[first + b]
    g1 = order[first + b + 1] if present > 1 else g0
    g2 = order[first + b + 2] if present > 2 else g0
    g3 = order[first + b + 3] if present > 3 else g0
    s1 = scale if present > 1 else zero
    s2 = scale if present > 2 else zero
    s3 = scale if present > 3 else zero
    return g0, g1, g2, g3, s1, s2, s3


@_jit(inline=True)
def _gather_block(images, order, first, nb, scale, ulist, uband, ucount, xv, part, q, row):
    """Block ``q`` (samples ``4q .. 4q + 3``): the pixels of part ``part``'s bands
    that are nonzero in any of its images, into list row ``row``.

    ``ulist[row, :ucount[row]]`` lists the union in ascending order,
    ``uband[row, r]`` is where the part's band ``r`` starts in it, and
    ``xv[row, s, k]`` is sample ``s``'s scaled value of pixel ``ulist[row, k]``,
    zero for the missing samples of a last, partial block.
    """
    g0, g1, g2, g3, s1, s2, s3 = _block_images(order, first, 4 * q, nb, scale, xv.dtype.type(0))
    n = np.uint64(0)
    for r in range(BANDS_PER_PART):
        uband[row, r] = n
        c = (part * BANDS_PER_PART + r) * BAND
        # A band is two chunks of LANES pixels, the second overlapping the first
        # by 2 * LANES - BAND pixels, which it skips.
        n += gather_union16(images, g0, g1, g2, g3, c, 0, scale, s1, s2, s3, ulist, xv, row, n)
        n += gather_union16(images, g0, g1, g2, g3, c + BAND - LANES, 2 * LANES - BAND, scale,
                            s1, s2, s3, ulist, xv, row, n)
    uband[row, BANDS_PER_PART] = n
    ucount[row] = n


@_jit(inline=True)
def _first_layer_block(W, Z, b, ulist, ucount, xv, q, j0, j1, T, tr):
    """Rows ``b .. b + 3``, columns ``j0:j1`` of ``Z = X W`` over list row ``q``
    (a block's union in one part of the pixels).

    Full tiles of :data:`TILE_GRAD` columns are summed in row ``tr`` of the
    scratch ``T`` (``4 * TILE_GRAD`` wide), the four samples at constant offsets:
    LLVM can then tell the four sums apart and keeps all of them in registers
    (16 zmm) across the union, where sums in four rows of ``Z`` (a run-time
    stride apart) were loaded and stored for every pass. The rest of the columns
    go four pixels by four samples per pass. Rows of a partial block's missing
    samples come out as zero and are ignored.
    """
    zero = Z.dtype.type(0)
    n = ucount[q]
    while j0 + TILE_GRAD <= j1:
        ja = np.uint64(j0)
        for jj in range(np.uint64(4 * TILE_GRAD)):
            T[tr, jj] = zero
        for k in range(n):
            u = ulist[q, k]
            x0, x1, x2, x3 = xv[q, 0, k], xv[q, 1, k], xv[q, 2, k], xv[q, 3, k]
            for jj in range(np.uint64(TILE_GRAD)):
                w = W[u, ja + jj]
                T[tr, jj] += x0 * w
                T[tr, TILE_GRAD + jj] += x1 * w
                T[tr, 2 * TILE_GRAD + jj] += x2 * w
                T[tr, 3 * TILE_GRAD + jj] += x3 * w
        for jj in range(np.uint64(TILE_GRAD)):
            Z[b, ja + jj] = T[tr, jj]
            Z[b + 1, ja + jj] = T[tr, TILE_GRAD + jj]
            Z[b + 2, ja + jj] = T[tr, 2 * TILE_GRAD + jj]
            Z[b + 3, ja + jj] = T[tr, 3 * TILE_GRAD + jj]
        j0 += TILE_GRAD
    if j0 == j1:
        return
    ja, jb = np.uint64(j0), np.uint64(j1)  # unsigned: see _acc_rows
    for j in range(ja, jb):
        Z[b, j] = zero
        Z[b + 1, j] = zero
        Z[b + 2, j] = zero
        Z[b + 3, j] = zero
    k = 0
    while k + 4 <= n:
        u0, u1, u2, u3 = ulist[q, k], ulist[q, k + 1], ulist[q, k + 2], ulist[q, k + 3]
        # x<p><s>: pixel k + p of sample s
        x00, x01, x02, x03 = xv[q, 0, k], xv[q, 1, k], xv[q, 2, k], xv[q, 3, k]
        x10, x11, x12, x13 = xv[q, 0, k + 1], xv[q, 1, k + 1], xv[q, 2, k + 1], xv[q, 3, k + 1]
        x20, x21, x22, x23 = xv[q, 0, k + 2], xv[q, 1, k + 2], xv[q, 2, k + 2], xv[q, 3, k + 2]
        x30, x31, x32, x33 = xv[q, 0, k + 3], xv[q, 1, k + 3], xv[q, 2, k + 3], xv[q, 3, k + 3]
        for j in range(ja, jb):
            w0, w1, w2, w3 = W[u0, j], W[u1, j], W[u2, j], W[u3, j]
            Z[b, j] += x00 * w0 + x10 * w1 + x20 * w2 + x30 * w3
            Z[b + 1, j] += x01 * w0 + x11 * w1 + x21 * w2 + x31 * w3
            Z[b + 2, j] += x02 * w0 + x12 * w1 + x22 * w2 + x32 * w3
            Z[b + 3, j] += x03 * w0 + x13 * w1 + x23 * w2 + x33 * w3
        k += 4
    while k < n:
        u0 = ulist[q, k]
        x00, x01, x02, x03 = xv[q, 0, k], xv[q, 1, k], xv[q, 2, k], xv[q, 3, k]
        for j in range(ja, jb):
            w0 = W[u0, j]
            Z[b, j] += x00 * w0
            Z[b + 1, j] += x01 * w0
            Z[b + 2, j] += x02 * w0
            Z[b + 3, j] += x03 * w0
        k += 1


@_jit(inline=True)
def _output_sample(
    A, W, bias, WT, Z, Dprev, has_hidden, grads, want_probs, labels, order, first, nb, probs,
    loss, hit, sidx, sval, t, b,
):
    """Sample ``b``: last layer, softmax, cross-entropy, its gradient, and back one layer.

    With ``has_hidden``, ``A[b]`` (the last hidden layer, pre-ReLU) is ReLU'd
    and ``Z[b] = A[b] W + bias``, read from ``WT``, which must hold ``W.T``;
    otherwise ``Z[b]`` already holds the logits.
    ``Z[b]`` becomes the probabilities (copied to ``probs[first + b]`` with
    ``want_probs``). With ``grads``: the loss and hit go to ``loss[b]`` and
    ``hit[b]``, ``Z[b]`` becomes ``dLoss/dz = (p - onehot(y)) / nb``, and with a
    hidden layer ``Dprev[b] = (Z[b] WT) * (A[b] > 0)``.
    """
    one = Z.dtype.type(1)
    if has_hidden:
        # Ten dot products over the whole row of A, zeros included: vectorised
        # over the inputs, they took less time than summing the fired units'
        # rows of W, ten columns wide (784-128-10, side by side: predicting
        # about 7% faster, training about 4%).
        zero = Z.dtype.type(0)
        n_in = A.shape[1]
        for i in range(n_in):
            # A select, not a branch; NaN passes through (as with np.maximum).
            A[b, i] = zero if A[b, i] <= zero else A[b, i]
        for j in range(N_OUT):
            s = zero
            for i in range(n_in):
                s += A[b, i] * WT[j, i]
            Z[b, j] = bias[0, j] + s
    y = labels[order[first + b]] if grads else 0
    zy = Z[b, y]
    lse, best = _softmax_xent(Z, b)
    if want_probs:
        for j in range(N_OUT):
            probs[first + b, j] = Z[b, j]
    if grads:
        loss[b] = lse - zy
        hit[b] = best == y
        Z[b, y] -= one
        nbf = Z.dtype.type(nb)
        for j in range(N_OUT):
            Z[b, j] = Z[b, j] / nbf
        if has_hidden:
            _backprop_row(Z, WT, A, Dprev, b, sidx, sval, t)


@_jit(inline=True)
def _first_layer_band(
    part, r, nb, ulist, uband, xv, D, W, VW, GW, acc, a0, lr, momentum, nesterov, weight_decay,
    use_momentum, train,
):
    """Band ``r`` of part ``part``: gradient into ``acc[a0:a0 + 28]``, update.

    A column tile at a time, the band's rows are summed block after block in
    ascending order: each of the block's union pixels in the band gets the
    block's four rows of ``D`` in one pass (rows of ``D`` past ``nb`` must be
    zero). Each row is updated as soon as its sum is complete.

    One row of ``acc`` is written per pass. Passes over four pixels' rows (4 x 4
    blocking, as in the forward pass) load less, but LLVM cannot tell that the
    four rows differ, so every pass first checked them for overlap; with about
    ten union pixels per band and block those checks cost more than they saved
    (784-128-10 b128: 263k -> 281k samples/s with one row per pass, bit-identical).
    """
    zero = W.dtype.type(0)
    n_out = W.shape[1]
    n_blocks = (nb + 3) // 4
    i0 = (part * BANDS_PER_PART + r) * BAND
    for j0 in range(0, n_out, TILE_GRAD):
        j1 = min(j0 + TILE_GRAD, n_out)
        ja, jb = np.uint64(j0), np.uint64(j1)  # unsigned: see _acc_rows
        for c in range(a0, a0 + BAND):
            for j in range(ja, jb):
                acc[c, j - ja] = zero
        full = j1 - j0 == TILE_GRAD
        for q in range(n_blocks):
            b = 4 * q
            row = part * (ulist.shape[0] // N_PARTS) + q
            for k in range(uband[row, r], uband[row, r + 1]):
                c0 = np.uint64(a0 + ulist[row, k] - i0)  # the pixel's row of acc (unsigned)
                x0, x1, x2, x3 = xv[row, 0, k], xv[row, 1, k], xv[row, 2, k], xv[row, 3, k]
                if full:  # a constant trip count: see TILE_GRAD
                    for jj in range(np.uint64(TILE_GRAD)):
                        j = ja + jj
                        acc[c0, jj] += (x0 * D[b, j] + x1 * D[b + 1, j] + x2 * D[b + 2, j]
                                        + x3 * D[b + 3, j])
                else:
                    for j in range(ja, jb):
                        acc[c0, j - ja] += (x0 * D[b, j] + x1 * D[b + 1, j] + x2 * D[b + 2, j]
                                            + x3 * D[b + 3, j])
        for c in range(BAND):
            _apply(W, VW, GW, i0 + c, j0, j1, acc, a0 + c, lr, momentum, nesterov, weight_decay,
                   use_momentum, train)


# ---------------------------------------------------------------------------
# Serial helpers
# ---------------------------------------------------------------------------


@_jit()
def _transpose_into(WT, W):
    """``WT[:] = W.T`` (both C-contiguous)."""
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            WT[j, i] = W[i, j]


# ---------------------------------------------------------------------------
# Parallel phases
# ---------------------------------------------------------------------------


@_jit(inline=True)
def _first_layer_part(images, order, first, nb, scale, ulist, uband, ucount, xv, W0, P, p, T, t):
    """Part ``p``'s share of the first layer (see :func:`_first_layer_parts`), on thread ``t``."""
    n_blocks = (nb + 3) // 4
    n_out = W0.shape[1]
    rows = P.shape[0] // N_PARTS
    lists = ulist.shape[0] // N_PARTS  # fixed, so that batches of any size use the same rows
    for q in range(n_blocks):
        _gather_block(images, order, first, nb, scale, ulist, uband, ucount, xv, p, q,
                      p * lists + q)
    # A slab of W0 at a time serves every block while in L2. (Computing each
    # block right after gathering it, while its lists are in L1, made no
    # difference at 128 units, side by side.)
    for j0 in range(0, n_out, TILE):
        for q in range(n_blocks):
            _first_layer_block(W0, P, p * rows + 4 * q, ulist, ucount, xv, p * lists + q, j0,
                               min(j0 + TILE, n_out), T, t)


@_jit(parallel=True)
def _first_layer_parts(images, order, first, nb, scale, ulist, uband, ucount, xv, W0, P,
                       n_threads):
    """Training phase A1, over the pixel parts: part ``p``'s share of the first layer.

    For every block of the batch, the union of part ``p``'s nonzero pixels
    (:func:`_gather_block`, list rows ``p * lists + q`` with ``lists =
    ulist.shape[0] // N_PARTS``), then ``P[p * rows + b] = X[b, part] W0[part]``
    (``rows = P.shape[0] // N_PARTS``). From the second step of an epoch on,
    :func:`_phase_b` does this for the next batch instead.
    """
    T = np.empty((n_threads, 4 * TILE_GRAD), W0.dtype)  # a thread's sums (_first_layer_block)
    for t in prange(n_threads):
        fp = flush_denormals()
        for p in range(t * N_PARTS // n_threads, (t + 1) * N_PARTS // n_threads):
            _first_layer_part(images, order, first, nb, scale, ulist, uband, ucount, xv, W0, P,
                              p, T, t)
        restore_fp_state(fp)


@_jit(inline=True)
def _combine_sample(P, b0, Z1, b):
    """``Z1[b] = b0 + P[b] + P[rows + b] + ...``, the parts in order."""
    rows = P.shape[0] // N_PARTS
    n_out = Z1.shape[1]
    for j in range(n_out):
        Z1[b, j] = b0[0, j] + P[b, j]
    for p in range(1, N_PARTS):
        for j in range(n_out):
            Z1[b, j] += P[p * rows + b, j]


@_jit(parallel=True)
def _combine_parts(P, b0, Z1, nb, n_threads):
    """Training phase A2 for deeper networks, over samples: :func:`_combine_sample`.

    With one hidden layer, :func:`_phase_a` combines each sample itself."""
    for t in prange(n_threads):
        fp = flush_denormals()
        for b in range(t * nb // n_threads, (t + 1) * nb // n_threads):
            _combine_sample(P, b0, Z1, b)
        restore_fp_state(fp)


@_jit(parallel=True)
def _phase_a(
    images, order, first, nb, scale, W0, b0, Z1, do_first, A, W, bias, WT, Z, Dprev, do_output,
    has_hidden, grads, want_probs, labels, probs, loss, hit, sidx, sval, P, combine, n_threads,
):
    """Phase A over samples: thread ``t`` takes blocks ``t * n_blocks // n_threads`` onwards.

    ``do_first`` (inference): ``Z1 = X W0 + b0`` over each sample's own nonzero
    pixels. ``do_output``: the per-sample output work of :func:`_output_sample`
    with the last layer ``A, W, bias, WT -> Z`` (and ``Dprev``). Training
    computes the first layer in :func:`_first_layer_parts` and, with
    ``combine`` (at most one hidden layer), adds up its parts here from ``b0``
    and ``P`` (:func:`_combine_sample`) just before each sample's output work:
    into ``A[b]``, or into the logits ``Z[b]`` when the first layer is the last.
    (Its own phase, that was one more fork and barrier per step.)
    """
    n_blocks = (nb + 3) // 4
    n_out = W0.shape[1]
    for t in prange(n_threads):
        fp = flush_denormals()
        q_lo = t * n_blocks // n_threads
        q_hi = (t + 1) * n_blocks // n_threads
        if do_first:
            # Inference needs no union lists (they serve the gradient): each
            # sample sums only its own nonzero pixels' rows, about 150 on MNIST
            # against about 300 in a block's union. The whole row of Z1 at once:
            # slabs of 128 or 256 columns were slower at 128-2048 units.
            for b in range(4 * q_lo, min(4 * q_hi, nb)):
                m = _pixel_gather(images, order[first + b], scale, sidx, sval, t)
                for j in range(n_out):
                    Z1[b, j] = b0[0, j]
                _acc_rows(Z1, b, 0, n_out, W0, sidx, sval, t, 0, m)
        if do_output:
            for b in range(4 * q_lo, min(4 * q_hi, nb)):
                if combine:  # into the first layer's output: A, or the logits Z if no hidden
                    if has_hidden:
                        _combine_sample(P, b0, A, b)
                    else:
                        _combine_sample(P, b0, Z, b)
                _output_sample(A, W, bias, WT, Z, Dprev, has_hidden, grads, want_probs, labels,
                               order, first, nb, probs, loss, hit, sidx, sval, t, b)
        restore_fp_state(fp)


@_jit(parallel=True)
def _forward_hidden(A, W, bias, Z, nb, sidx, sval, n_threads):
    """Middle layer forward: ``A = relu(A)`` in place, then ``Z[:nb] = A W + bias``.

    The sum runs over the units that fired only.
    """
    n_out = W.shape[1]
    for t in prange(n_threads):
        fp = flush_denormals()
        for b in range(t * nb // n_threads, (t + 1) * nb // n_threads):
            m = _relu_gather(A, b, sidx, sval, t)
            for j in range(n_out):
                Z[b, j] = bias[0, j]
            _acc_rows(Z, b, 0, n_out, W, sidx, sval, t, 0, m)
        restore_fp_state(fp)


@_jit(parallel=True)
def _backward_hidden(D, WT, A, Dprev, nb, sidx, sval, n_threads):
    """Middle layer backward: ``Dprev[:nb] = (D WT) * (A > 0)``.

    The product sums the rows of ``WT`` where ``D != 0`` only.
    """
    for t in prange(n_threads):
        fp = flush_denormals()
        for b in range(t * nb // n_threads, (t + 1) * nb // n_threads):
            _backprop_row(D, WT, A, Dprev, b, sidx, sval, t)
        restore_fp_state(fp)


@_jit(parallel=True)
def _phase_b(
    nb, ulist, uband, xv, D0, W0, b0, VW0, Vb0, GW0, Gb0, A, D, WT, bias, VWT, Vb, GWT, Gb,
    acc, sidx, sval, has_hidden, lr, momentum, nesterov, weight_decay, use_momentum, train,
    images, order, scale, ucount, P, next_first, next_nb, n_threads,
):
    """Phase B over the pixel parts: gradients and SGD (or, without ``train``,
    gradients out); then, with ``next_nb > 0``, phase A1 of the next batch
    (samples ``order[next_first:next_first + next_nb]``).

    Each part's thread goes on to its part of the next batch's first layer
    (:func:`_first_layer_part`): it reads only that part's rows of ``W0``, which
    this thread has just updated, and overwrites only that part's union lists,
    which this thread has just finished with; so the two need no barrier
    between them, and a step has one fork and barrier fewer.

    The thread of part ``p`` (as in :func:`_first_layer_parts`) does its bands of
    the first layer (:func:`_first_layer_band`), from its own union lists and on
    its own rows of ``W0``. With a hidden layer, the thread of the first part also
    does the ten columns of the last layer and its bias (:func:`_output_column`;
    ``A`` and ``D`` are that layer's input and delta, and its weights, velocities
    and gradients come transposed, ``WT, VWT, GWT``); the thread of the last part
    does the first layer's bias. The first part, the top of the image, has the
    fewer pixels (MNIST: unions of four hold about 145 pixels in the top half,
    161 in the bottom), so it takes the larger extra.
    """
    n_out0 = W0.shape[1]
    zero = W0.dtype.type(0)
    T = np.empty((n_threads, 4 * TILE_GRAD), W0.dtype)  # a thread's sums (_first_layer_block)
    for t in prange(n_threads):
        fp = flush_denormals()
        a0 = t * BAND  # this thread's rows of acc
        for p in range(t * N_PARTS // n_threads, (t + 1) * N_PARTS // n_threads):
            for r in range(BANDS_PER_PART):
                _first_layer_band(p, r, nb, ulist, uband, xv, D0, W0, VW0, GW0, acc, a0, lr,
                                  momentum, nesterov, weight_decay, use_momentum, train)
            if p == N_PARTS - 1:
                for j0 in range(0, n_out0, TILE_GRAD):
                    j1 = min(j0 + TILE_GRAD, n_out0)
                    _bias_grad(D0, nb, acc, a0, j0, j1)
                    _apply(b0, Vb0, Gb0, 0, j0, j1, acc, a0, lr, momentum, nesterov, zero,
                           use_momentum, train)
            if p == 0 and has_hidden:
                for j in range(N_OUT):
                    _output_column(A, D, WT, VWT, GWT, j, nb, acc, a0, lr, momentum, nesterov,
                                   weight_decay, use_momentum, train)
                _bias_grad(D, nb, acc, a0, 0, N_OUT)
                _apply(bias, Vb, Gb, 0, 0, N_OUT, acc, a0, lr, momentum, nesterov, zero,
                       use_momentum, train)
            if next_nb > 0:
                _first_layer_part(images, order, next_first, next_nb, scale, ulist, uband,
                                  ucount, xv, W0, P, p, T, t)
        restore_fp_state(fp)


@_jit(parallel=True)
def _update_layer(
    A, D, W, bias, VW, Vb, GW, Gb, WT, nb, acc, sidx, sval, lr, momentum, nesterov,
    weight_decay, use_momentum, train, n_threads,
):
    """Middle layer update: ``dW[i] = sum_b A[b, i] D[b]`` row by row, and the update.

    Items are the rows of ``W`` then the bias, dealt out evenly (they cost about
    the same). Each row sums ``D``'s rows over the samples whose unit ``i``
    fired, in ascending order. After its update a row is copied into ``WT``.
    """
    n_in, n_out = W.shape
    zero = W.dtype.type(0)
    for t in prange(n_threads):
        fp = flush_denormals()
        for i in range(t * (n_in + 1) // n_threads, (t + 1) * (n_in + 1) // n_threads):
            c = t * BAND
            if i == n_in:
                _bias_grad(D, nb, acc, c, 0, n_out)
                _apply(bias, Vb, Gb, 0, 0, n_out, acc, c, lr, momentum, nesterov, zero,
                       use_momentum, train)
                continue
            if n_out == N_OUT:  # as wide as the output layer: a constant width, unrolled
                _layer_row(A, D, W, VW, GW, WT, i, N_OUT, nb, acc, c, sidx, sval, t, lr,
                           momentum, nesterov, weight_decay, use_momentum, train)
            else:
                _layer_row(A, D, W, VW, GW, WT, i, n_out, nb, acc, c, sidx, sval, t, lr,
                           momentum, nesterov, weight_decay, use_momentum, train)
        restore_fp_state(fp)


# ---------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------


@_jit()
def _forward_batch(W, b, WT, acts, dels, images, labels, order, first, nb, scale, grads,
                   want_probs, probs, ws, first_done, n_threads):
    """Every phase over samples for samples ``order[first:first + nb]``.

    ``acts`` has ``L + 1`` entries, the last being ``dels[L - 1]`` (the logits),
    so that ``acts[1]`` is the first layer's output whatever the depth. With
    ``first_done`` (training only), phase A1 has already run for this batch
    (in the previous step's :func:`_phase_b`).
    """
    ulist, uband, ucount, xv, P, sidx, sval, acc, loss, hit = ws
    n_layers = len(W)
    last = n_layers - 1
    prev = max(last - 1, 0)
    deep = n_layers > 2
    if grads:
        # Training: the first layer by pixel parts (see _first_layer_parts).
        if not first_done:
            _first_layer_parts(images, order, first, nb, scale, ulist, uband, ucount, xv, W[0],
                               P, n_threads)
        if deep:
            _combine_parts(P, b[0], acts[1], nb, n_threads)
    else:
        # Inference: the first layer by samples, with the output layer in the same
        # phase when there is no middle layer.
        _phase_a(images, order, first, nb, scale, W[0], b[0], acts[1], _flag(True), acts[last],
                 W[last], b[last], WT[last], dels[last], dels[prev], not deep, n_layers > 1,
                 grads, want_probs, labels, probs, loss, hit, sidx, sval, P, _flag(False),
                 n_threads)
    for layer in range(1, last):
        _forward_hidden(acts[layer], W[layer], b[layer], acts[layer + 1], nb, sidx, sval,
                        n_threads)
    if grads or deep:
        _phase_a(images, order, first, nb, scale, W[0], b[0], acts[1], _flag(False), acts[last],
                 W[last], b[last], WT[last], dels[last], dels[prev], _flag(True), n_layers > 1,
                 grads, want_probs, labels, probs, loss, hit, sidx, sval, P, grads and not deep,
                 n_threads)
    if deep:
        if grads:
            for layer in range(last - 1, 0, -1):
                _backward_hidden(dels[layer], WT[layer], acts[layer], dels[layer - 1], nb, sidx,
                                 sval, n_threads)
    if grads:
        # The first layer's gradient takes samples four at a time: pad with zeros.
        dels[0][nb : (nb + 3) // 4 * 4] = 0


@_jit()
def run_batches(
    W, b, VW, Vb, GW, Gb, WT, acts, dels, images, labels, order, batch_size, lrs, momentum,
    nesterov, weight_decay, scale, train, probs, ws, n_threads,
):
    """Run every mini-batch of ``order``: forward, loss, backward and SGD (or gradients).

    Parameters
    ----------
    W, b : tuples of 2-D arrays
        Weights ``(n[l], n[l+1])`` and biases as ``(1, n[l+1])`` views; updated
        in place when ``train``.
    VW, Vb : tuples of 2-D arrays
        Velocities, same shapes, updated in place when ``train`` with momentum.
    GW, Gb : tuples of 2-D arrays
        Without ``train``: receive the gradients of the single batch.
    WT : tuple of 2-D arrays
        ``WT[l]`` (``l >= 1``) is scratch for ``W[l].T`` (the last layer is
        trained there and copied back to ``W``); ``WT[0]`` is unused.
    acts, dels : tuples of 2-D arrays
        Scratch: ``acts[l]`` (``1 <= l < L``) is ``(batch, n[l])``, ``acts[0]``
        is unused and ``acts[L]`` is ``dels[L - 1]``; ``dels[l]`` is ``(batch, n[l+1])``.
    images, labels, order : arrays
        ``(n, 784)`` uint8 (or floats already scaled), ``(n,)`` uint8, and the
        int64 sample order: step ``s`` takes ``order[s * batch_size:][:batch_size]``
        (in training, sorted by label within the step: ``_batch_order``).
    lrs : float64 array
        Learning rate of each step.
    momentum, weight_decay, scale : model-dtype scalars
    nesterov, train : bool
    probs : 2-D array
        Without ``train``: ``(len(order), 10)`` receives the probabilities.
    ws : tuple
        Scratch from ``numba_backend._buffers``.
    n_threads : int
        ``numba.get_num_threads()``, passed in because calling it in compiled
        code would make the kernels uncacheable.

    Returns
    -------
    loss_sum : float
        Sum of per-sample losses over the epoch, accumulated in float64.
    correct : int
        Samples whose prediction matched the label, each before its step's update.
    """
    ulist, uband, ucount, xv, P, sidx, sval, acc, loss, hit = ws
    if train:  # not for gradients: those return probabilities in the order given
        order = by_label_within_batches(order, labels, batch_size)  # smaller unions: see there
    dt = W[0].dtype.type
    n_layers = len(W)
    for layer in range(1, n_layers):
        _transpose_into(WT[layer], W[layer])
    last = n_layers - 1
    # The epoch updates the last layer in its transpose, WT[last], a row per
    # column (no strided views: a view in a parallel body makes Numba drop the
    # noalias marks of all its arrays, and LLVM then guards every vector loop
    # with overlap checks). W, its velocity and gradient are copied back at the end.
    VWT = np.empty_like(WT[last])
    GWT = np.zeros_like(WT[last])
    if n_layers > 1 and train:
        _transpose_into(VWT, VW[last])
    use_momentum = momentum != 0
    loss_sum = 0.0
    correct = 0
    n_total = order.shape[0]
    n_steps = (n_total + batch_size - 1) // batch_size
    for step in range(n_steps):
        first = step * batch_size
        nb = min(batch_size, n_total - first)
        _forward_batch(W, b, WT, acts, dels, images, labels, order, first, nb, scale,
                       _flag(True), not train, probs, ws, step > 0, n_threads)
        for q in range(nb):
            loss_sum += loss[q]
            correct += hit[q]
        lr = dt(lrs[step])
        _phase_b(nb, ulist, uband, xv, dels[0], W[0], b[0], VW[0], Vb[0], GW[0], Gb[0],
                 acts[last], dels[last], WT[last], b[last], VWT, Vb[last], GWT, Gb[last], acc,
                 sidx, sval, n_layers > 1, lr, momentum, nesterov, weight_decay, use_momentum,
                 train, images, order, scale, ucount, P, first + nb,
                 min(batch_size, n_total - first - nb), n_threads)
        for layer in range(1, last):
            _update_layer(acts[layer], dels[layer], W[layer], b[layer], VW[layer], Vb[layer],
                          GW[layer], Gb[layer], WT[layer], nb, acc, sidx, sval, lr, momentum,
                          nesterov, weight_decay, use_momentum, train, n_threads)
    if n_layers > 1:
        if train:
            _transpose_into(W[last], WT[last])
            _transpose_into(VW[last], VWT)
        else:
            _transpose_into(GW[last], GWT)
    return loss_sum, correct


@_jit()
def predict(W, b, WT, acts, dels, images, scale, probs, ws, first, nb, n_threads):
    """Probabilities of images ``first:first + nb`` into the same rows of ``probs``.

    Leaves the hidden activations (after ReLU) in ``acts[l][:nb]``. Scratch
    arguments as in :func:`run_batches`, sized for at least ``nb`` samples.
    """
    for layer in range(1, len(W)):
        _transpose_into(WT[layer], W[layer])
    order = np.arange(images.shape[0])
    no_labels = np.zeros(1, np.uint8)
    _forward_batch(W, b, WT, acts, dels, images, no_labels, order, first, nb, scale,
                   _flag(False), _flag(True), probs, ws, _flag(False), n_threads)
