"""Numba kernels for one narrow hidden layer (up to :data:`WIDTH` units), plain SGD.

At ten hidden units the general kernels (:mod:`._numba_kernels`) spend most of
a step on bookkeeping, not arithmetic: their column loops are ten long, which
fills no vector register. Here every row of every layer is padded with zeros
to :data:`WIDTH` lanes, one AVX-512 register of float32, and each row
operation is one vector operation (``_rows16``). A pixel's
first-layer weights are one such row, so the nonzero pixels of a block of four
images (their union, listed sixteen pixels at a time by ``_compress``) select
the rows the block needs, in the forward pass and in the gradient.

All parameters live in one flat row ``P`` (:func:`layout`): the first layer
``W0`` (784 rows of ``WIDTH``), the output layer ``W1`` (``WIDTH`` rows of
``WIDTH``: hidden unit by class), then the two biases; their velocities ``V``
have the same layout. The first layer's rows are split into :data:`N_PARTS`
pixel parts (the top and bottom of the image), each computed, read and
updated by its own thread, so that they stay in its core's cache (another
thread runs a part only if it needs the part's sums before the part's own
thread has started it). A training step is two phases:

X. ``_first_layer_part``, per part: the first layer's gradient of the previous
   batch over the part's rows, block by block over the union lists kept from
   its forward pass (four deltas per loaded row), then SGD on those rows; the
   top part also sums the groups' gradients of the small layers and updates
   them. Then the part's share of the next batch's hidden layer: per block of
   four, the union list of the part's pixels and the partial sums (each loaded
   weight row serves the four samples; eight chains in registers).
Y. ``_output_chunk``, per group of sixteen samples (one per vector lane, the
   block transposed in and out): the parts' partial sums plus the bias,
   ReLU, the logits, softmax and cross-entropy, and the gradient back to the
   hidden layer; the output layer's and the biases' gradients go to the
   group's own row of ``GS``. It also asks for the next batch's images, so
   that phase X finds them in cache.

Training runs the whole epoch in one parallel region (``_epoch``); the
threads hand over through atomic counters (``_sync``) instead of Numba
starting and joining a region for each phase (2.5-3 µs each here; one region
per epoch made 784-10-10 b128 1.12-1.15x faster). There is no barrier between
the phases: a group of phase Y starts as soon as both parts have its sums,
and a block's gradient as soon as its group is through phase Y, so a thread
that finishes its part first is not left waiting for the other (with a
barrier, a copy counting cycles showed one thread waiting 0.7k-17.8k counts
of a step of about 110k-130k, the heavier part not always the same).
Against a barrier after each phase, 784-10-10 trained 1.07-1.10x faster at
b32 (four runs of alternating epochs) and 0.98-1.06x at b128.
Inference runs the phases as regions of their own (``_first_layer``,
``_output_layer``).
Between the phases only the partial sums and the hidden layer's gradient
(``WIDTH`` values per sample) cross cores. (Split by samples instead, each
step moved half of ``W0`` and of its gradient across cores; side by side, the
split by parts ran 784-10-10 b32 about 1.4x faster, b128 about 1.05x.)

Skipping zero pixels is exact for finite weights, as in the general kernels;
on dense inputs every pixel is listed and the work is that of a dense product.
Parts and groups are fixed, not the thread count, and every sum runs in an
order fixed by the data, so results are bit-identical for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..numerics import N_PIXELS
from ._batch_order import by_label_within_batches
from ._compress import gather_union16
from ._fpenv import flush_denormals, restore_fp_state
from ._jit import jit as _jit
from ._numba_kernels import N_OUT, _apply, _block_images
from ._prefetch import prefetch
from ._rows16 import (
    LANES,
    add_rows,
    axpy_row,
    copy_row,
    divide_row,
    fill_row,
    gather_block,
    mask_row,
    relu_row,
    scatter_block,
    softmax_cols,
    transpose16,
)
from ._sync import arrive, claim, wait_until

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

#: Threads of the training region: one per part.
N_TASKS = N_PARTS

#: Counters apart in ``_epoch``'s ``progress``: each part's counter on a cache line of
#: its own, so that the two parts' threads do not take the line from each other.
_PAD = 8

#: Images requested this many blocks of four before they are listed (see _prefetch).
PREFETCH_AHEAD = 4


def layout() -> dict[str, tuple[int, int]]:
    """Where each parameter lives in the flat row: name -> (offset, rows of ``WIDTH``)."""
    return {"W0": (W0_AT, N_PIXELS), "W1": (W1_AT, WIDTH), "b0": (B0_AT, 1), "b1": (B1_AT, 1)}


@_jit(inline=True)
def _groups(n):
    """Groups of sixteen samples (phase Y's unit) that ``n`` samples fill."""
    return (n + LANES - 1) // LANES


@_jit(inline=True)
def _chunk_bounds(c, nb, n_chunks):
    """Samples ``[lo, hi)`` of chunk ``c`` of ``n_chunks`` of a batch of ``nb``, in whole
    groups of sixteen (phase Y's unit)."""
    n_groups = _groups(nb)
    return LANES * (c * n_groups // n_chunks), min(LANES * ((c + 1) * n_groups // n_chunks), nb)


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
def _transpose_output(P, W1T):
    """``W1T[j, u] = W1[u, j]``: the output layer's rows by class, for the gradient."""
    for j in range(WIDTH):
        for u in range(WIDTH):
            W1T[j, u] = P[0, W1_AT + u * WIDTH + j]


@_jit(inline=True)
def _first_layer_part(q, images, order, first, nb, scale, P, V, HP, D0, GP, GS, W1T, ulist, xv,
                      counts, acc, prev_nb, lr, momentum, nesterov, weight_decay,
                      use_momentum, sync, group_done, done_at, progress, progress_at):
    """Phase X (see the module doc) for part ``q``: the previous batch's
    first-layer gradient and update (if ``prev_nb``), then the part's partial
    sums of samples ``order[first:first + nb]`` (if ``nb``).

    The union lists of block ``k`` of part ``q`` are row ``q * n_rows + k`` of
    ``ulist, xv`` and ``counts``, where ``n_rows = counts.shape[0] // N_PARTS``
    (with one row per part, as for inference, every block reuses it);
    ``HP``'s rows ``q * m .. q * m + nb`` hold part ``q``'s sums, ``m`` its
    rows per part.

    With ``sync`` (training, see ``_epoch``), the gradient of block ``k``
    waits for ``group_done[done_at + k // 4]`` (its group of sixteen samples
    through phase Y), and ``progress[progress_at]`` counts the groups whose
    sums are done.
    """
    zero = P.dtype.type(0)
    n_rows = counts.shape[0] // N_PARTS
    m = HP.shape[0] // N_PARTS
    if prev_nb > 0:
        for k in range((prev_nb + 3) // 4):
            if sync:
                wait_until(group_done, done_at + k // 4, 1)
            r = q * n_rows + k
            # each listed pixel's gradient row in GP[q] += its four values times D0[4k:4k + 4]
            scatter_block(GP, q, -PART_START[q] * WIDTH, D0, 4 * k, ulist, xv, r, counts[r])
        lo, hi = PART_START[q] * WIDTH, PART_START[q + 1] * WIDTH
        _apply(P, V, P, 0, lo, hi, GP, q, lr, momentum, nesterov, weight_decay,
               use_momentum, True)
        for i in range(hi - lo):
            GP[q, i] = zero
        if q == 0:  # the top part: fewer pixels, and less ink in MNIST's digits
            for i in range(N_SMALL):
                acc[0, i] = GS[0, i]
                GS[0, i] = zero
            for c in range(1, _groups(prev_nb)):  # a row per group
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
        ahead_b = b + 4 * PREFETCH_AHEAD
        for i in range(ahead_b, min(ahead_b + 4, nb)):  # that block's images, if any
            ahead = order[first + i]
            for p in range(PART_START[q], PART_START[q + 1], 64 // images.itemsize):
                prefetch(images, ahead, p)
            prefetch(images, ahead, PART_START[q + 1] - 1)
        r = q * n_rows + (b // 4) % n_rows
        n = _union(images, order, first, b, nb, scale, q, ulist, xv, r)
        counts[r] = n
        # HP[q * m + b:q * m + b + 4]: the listed pixels' W0 rows times the four samples' values
        gather_block(HP, q * m + b, P, W0_AT, ulist, xv, r, n)
        if sync and (b + 4 >= nb or (b + 4) % LANES == 0):
            arrive(progress, progress_at)  # a group of sixteen (or the batch's last) done


@_jit(parallel=True)
def _first_layer(images, order, first, nb, scale, P, V, HP, D0, GP, GS, W1T, ulist, xv, counts,
                 acc, prev_nb, lr, momentum, nesterov, weight_decay, use_momentum):
    """Phase X as a parallel region of its own (inference): :func:`_first_layer_part`
    for every part."""
    for q in prange(N_PARTS):
        fp = flush_denormals()
        _first_layer_part(q, images, order, first, nb, scale, P, V, HP, D0, GP, GS, W1T, ulist,
                          xv, counts, acc, prev_nb, lr, momentum, nesterov, weight_decay,
                          use_momentum, False, counts, 0, counts, 0)
        restore_fp_state(fp)


@_jit(inline=True)
def _output_chunk(c, HP, P, n1, W1T, H, HT, Z, D0, GS, images, labels, order, first, nb, probs,
                  loss, hit, n_chunks, grads):
    """Phase Y (see the module doc) for chunk ``c`` of ``n_chunks`` of samples
    ``order[first:first + nb]``.

    Sixteen samples at a time, one per lane: their hidden rows ``H[g:g + 16]``
    transposed into ``HT`` (a row per hidden unit), the logits, softmax and
    gradients computed as rows of ``Z`` and ``D0`` by class and by unit, then
    transposed back to a row per sample for the small layers' gradient and
    phase X. The multiply-adds are those of a row per sample, in the same
    order, so every gradient rounds as it did; but there are no reductions
    across lanes and no chain of dependent steps per sample for the
    out-of-order core to hide, and the log-sum-exp's logarithm is one vector
    pass instead of a libm call per sample (phase Y alone 1.7-2.1x faster,
    README, Performance, session 14).

    Without ``grads`` (inference) the probabilities go to ``probs[first + b]``
    instead and ``labels``, ``loss``, ``hit`` and ``GS`` are not used; with
    them, sample ``b``'s loss and hit go to ``loss[first + b]`` and
    ``hit[first + b]``, and the small layers' gradient is added to ``GS[c]``
    (training runs a chunk per group of sixteen). ``H``, ``HT``, ``Z`` and
    ``D0`` need rows up to ``nb`` rounded up to sixteen; ``D0``'s rows past
    ``nb`` are zeroed.
    """
    one = Z.dtype.type(1)
    zero = Z.dtype.type(0)
    nbf = Z.dtype.type(nb)
    m = HP.shape[0] // N_PARTS
    b_lo, b_hi = _chunk_bounds(c, nb, n_chunks)
    for g in range(b_lo, b_hi, LANES):
        cnt = min(LANES, b_hi - g)
        for b in range(g, g + cnt):
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
            copy_row(HT, b, H, b, 0)
        for b in range(g + cnt, g + LANES):  # a last group's missing samples
            fill_row(HT, b, zero)
        transpose16(HT, g)
        # Z[g + j] is class j's logits; D0[g:g + 3] take the log-sum-exps, the
        # best classes and the labels' logits until the gradient overwrites them.
        for j in range(N_OUT):
            fill_row(Z, g + j, P[0, B1_AT + j])
        for u in range(n1):
            for j in range(N_OUT):
                axpy_row(Z, g + j, 0, P[0, W1_AT + u * WIDTH + j], HT, g + u, 0)
        if grads:
            for i in range(cnt):
                D0[g + 2, i] = Z[g + labels[order[first + g + i]], i]
        softmax_cols(Z, g, N_OUT, D0, g)
        if not grads:
            for i in range(cnt):
                for j in range(N_OUT):
                    probs[first + g + i, j] = Z[g + j, i]
            continue
        for i in range(cnt):
            y = labels[order[first + g + i]]
            loss[first + g + i] = D0[g, i] - D0[g + 2, i]
            hit[first + g + i] = D0[g + 1, i] == y
            Z[g + y, i] -= one
        for j in range(N_OUT):
            divide_row(Z, g + j, nbf)
        for u in range(LANES):
            fill_row(D0, g + u, zero)
        for j in range(N_OUT):
            for u in range(n1):
                axpy_row(D0, g + u, 0, W1T[j, u], Z, g + j, 0)
        for u in range(n1):
            mask_row(D0, g + u, HT, g + u)
        transpose16(Z, g)  # a row per sample again (classes past N_OUT are 0)
        transpose16(D0, g)
        for b in range(g + cnt, g + LANES):
            fill_row(D0, b, zero)  # phase X reads whole blocks of four
        for b in range(g, g + cnt):
            for u in range(n1):
                axpy_row(GS, c, u * WIDTH, H[b, u], Z, b, 0)
            axpy_row(GS, c, B0_AT - W1_AT, one, D0, b, 0)
            axpy_row(GS, c, B1_AT - W1_AT, one, Z, b, 0)


@_jit(parallel=True)
def _output_layer(HP, P, n1, W1T, H, HT, Z, D0, GS, images, labels, order, first, nb, probs,
                  loss, hit, n_chunks, grads):
    """Phase Y as a parallel region of its own (inference): :func:`_output_chunk`
    for every chunk."""
    for c in prange(n_chunks):
        fp = flush_denormals()
        _output_chunk(c, HP, P, n1, W1T, H, HT, Z, D0, GS, images, labels, order, first, nb,
                      probs, loss, hit, n_chunks, grads)
        restore_fp_state(fp)


@_jit(inline=True)
def _part_task(q, s, images, order, batch_size, lrs, momentum, nesterov, weight_decay, scale, P,
               V, HP, D0, GP, GS, W1T, ulist, xv, counts, acc, group_done, progress):
    """Phase X of step ``s`` for part ``q``: the gradient of batch ``s - 1`` (if ``s``
    > 0) and the sums of batch ``s`` (if there is one)."""
    n_total = order.shape[0]
    groups = _groups(batch_size)
    prev_nb = min(batch_size, n_total - (s - 1) * batch_size) if s > 0 else 0
    lr = P.dtype.type(lrs[s - 1]) if s > 0 else P.dtype.type(0)
    first = s * batch_size
    _first_layer_part(q, images, order, first, min(batch_size, max(n_total - first, 0)), scale,
                      P, V, HP, D0, GP, GS, W1T, ulist, xv, counts, acc, prev_nb, lr, momentum,
                      nesterov, weight_decay, momentum != 0, True, group_done,
                      (s - 1) * groups, progress, (s * N_PARTS + q) * _PAD)


@_jit(parallel=True)
def _epoch(images, labels, order, batch_size, lrs, momentum, nesterov, weight_decay, scale, P, V,
           n1, HP, H, HT, Z, D0, GP, GS, W1T, ulist, xv, counts, acc, loss, hit, claims,
           group_done, progress):
    """Every phase of an epoch in one parallel region, with no barrier between them.

    Step ``s`` is phase X (``_part_task``: part ``q`` is task ``q`` of phase
    ``2s``) and phase Y, in which group ``g`` of sixteen samples is task ``g``
    of phase ``2s + 1``; a last phase X ``n_steps`` takes the last gradient.
    Thread ``t`` runs part ``t``, then claims Y's groups in order, then goes on
    to its part of the next step. Each task waits only for what it reads: a
    group for the sums of its samples in both parts (``progress``, a count of
    groups per step and part), a block's gradient for its group's phase Y
    (``group_done``, one flag per step and group). So the thread that finishes
    its part first starts on phase Y while the other is still at its last
    blocks, and begins the next step's gradient while the other is still on
    the last groups. A part still unclaimed when a group needs its sums is run
    by the thread that needs them, so one thread (or a second one that starts
    late) still finishes the epoch. Nothing is overwritten while another task
    may read it: a part's next sums come after its gradient, which waited for
    every group, and a group's phase Y after both parts' sums of the step,
    which come after both gradients that read the group's ``D0`` rows.

    Which thread runs a task changes no result: every task has its own
    scratch, and the small layers' gradient is kept per group (``GS`` row
    ``g``) and summed in group order. ``claims`` (zeros, ``max(N_PARTS,
    groups)`` per phase), ``group_done`` (zeros, ``groups`` per step) and
    ``progress`` (zeros, ``N_PARTS * _PAD`` per step) are the hand-over's
    counters; ``loss`` and ``hit`` have a place per sample.
    """
    n_total = order.shape[0]
    n_steps = (n_total + batch_size - 1) // batch_size
    groups = _groups(batch_size)
    width = max(N_PARTS, groups)
    probs = np.empty((1, N_OUT), P.dtype)  # never written: probabilities are not kept
    for t in prange(N_TASKS):
        fp = flush_denormals()
        for s in range(n_steps + 1):
            # phase X of step s: this thread's own part; the last phase, any part left
            for k in range(N_PARTS if s == n_steps else 1):
                q = (t + k) % N_PARTS
                if claim(claims, 2 * s * width + q):
                    _part_task(q, s, images, order, batch_size, lrs, momentum, nesterov,
                               weight_decay, scale, P, V, HP, D0, GP, GS, W1T, ulist, xv,
                               counts, acc, group_done, progress)
            if s == n_steps:
                break
            first = s * batch_size
            nb = min(batch_size, n_total - first)
            n_groups = _groups(nb)
            for g in range(n_groups):  # phase Y of step s
                if not claim(claims, (2 * s + 1) * width + g):
                    continue
                for q in range(N_PARTS):
                    if claim(claims, 2 * s * width + q):  # a part no thread has started
                        _part_task(q, s, images, order, batch_size, lrs, momentum, nesterov,
                                   weight_decay, scale, P, V, HP, D0, GP, GS, W1T, ulist, xv,
                                   counts, acc, group_done, progress)
                    wait_until(progress, (s * N_PARTS + q) * _PAD, g + 1)
                _output_chunk(g, HP, P, n1, W1T, H, HT, Z, D0, GS, images, labels, order, first,
                              nb, probs, loss, hit, n_groups, True)
                arrive(group_done, s * groups + g)
        restore_fp_state(fp)


@_jit()
def run_narrow(P, V, images, labels, order, batch_size, lrs, momentum, nesterov, weight_decay,
               scale, ws, n1):
    """Train every mini-batch of ``order`` by SGD; return ``(loss_sum, correct)``.

    ``P`` and ``V`` are the parameters and velocities in the flat layout of
    :func:`layout`, ``(1, N_PARAMS)``, zero in every padding lane; ``n1`` is
    the hidden width. The other arguments are as for
    :func:`._numba_kernels.run_batches` (each step's samples taken in label
    order as there; no thread count: the region runs :data:`N_TASKS` ways);
    the scratch ``ws`` comes from ``numba_backend._buffers_narrow`` (its
    ``GP`` and ``GS`` must be zero).
    """
    W1T, HP, H, HT, Z, D0, GP, GS, ulist, xv, counts, acc = ws
    order = by_label_within_batches(order, labels, batch_size)  # smaller unions: see there
    n_total = order.shape[0]
    n_steps = (n_total + batch_size - 1) // batch_size
    groups = _groups(batch_size)
    loss = np.empty(n_total, np.float64)
    hit = np.empty(n_total, np.int64)
    claims = np.zeros(max(N_PARTS, groups) * (2 * n_steps + 1), np.int64)
    group_done = np.zeros(groups * n_steps, np.int64)
    progress = np.zeros(N_PARTS * _PAD * (n_steps + 1), np.int64)
    _transpose_output(P, W1T)
    _epoch(images, labels, order, batch_size, lrs, momentum, nesterov, weight_decay, scale, P, V,
           n1, HP, H, HT, Z, D0, GP, GS, W1T, ulist, xv, counts, acc, loss, hit, claims,
           group_done, progress)
    loss_sum = 0.0
    correct = 0
    for i in range(n_total):
        loss_sum += loss[i]
        correct += hit[i]
    return loss_sum, correct


@_jit()
def predict_narrow(P, images, scale, probs, ws, first, nb, n1, n_threads):
    """Probabilities of images ``first:first + nb`` into the same rows of ``probs``.

    Leaves the hidden layer (after ReLU, padded) in ``H[:nb]`` of the scratch
    ``ws`` (from ``numba_backend._buffers_narrow``, sized for at least ``nb``
    samples). Phase Y runs ``n_threads`` chunks: without gradients, the split
    changes no result.
    """
    W1T, HP, H, HT, Z, D0, GP, GS, ulist, xv, counts, acc = ws
    dt = P.dtype.type
    order = np.arange(images.shape[0])
    no_labels = np.zeros(1, np.uint8)
    loss, hit = np.empty(1, np.float64), np.empty(1, np.int64)  # not used without gradients
    _transpose_output(P, W1T)
    _first_layer(images, order, first, nb, scale, P, P, HP, D0, GP, GS, W1T, ulist, xv, counts,
                 acc, 0, dt(0), dt(0), False, dt(0), False)
    _output_layer(HP, P, n1, W1T, H, HT, Z, D0, GS, images, no_labels, order, first, nb, probs,
                  loss, hit, n_threads, False)
