"""General fused Numba epoch kernel: every feature the reference backend has.

The fast path in :mod:`fastmnist.backends._numba_kernels` handles plain SGD
only. This module runs an epoch with anything
:meth:`~fastmnist.backends.numpy_backend.NumpyBackend.train_epoch` accepts:
any depth, float32 or float64, SGD (momentum, Nesterov, weight decay), Adam
and AdamW, dropout, label smoothing and per-sample translations. One compiled
call runs the whole epoch; the entry point is :func:`train_epoch_general`.
Nothing here is compiled at import: every function is a lazy ``@njit``
dispatcher that compiles on its first call or loads from Numba's on-disk cache.

Design
------
Layers ``l = 0 .. L-1`` map ``n[l]`` to ``n[l+1]`` units. A serial driver
(:func:`_run_epoch`) loops over mini-batches and calls one parallel phase per
layer and direction. Each phase is a ``prange`` over threads; a thread takes a
contiguous share of the batch's blocks of four samples, or a round-robin share
of a layer's blocks of four parameter rows.

Every product is the same register-blocked kernel, :func:`_axpy4`: four
output rows (four samples, or four rows of a gradient) updated from four rows
of a matrix per pass, over a list of the rows that are nonzero for any of the
four outputs. Sparsity comes from the data: about 80% of MNIST pixels are
zero, and ReLU plus dropout zero about 60% of hidden units. A union over four
samples wastes some multiplications by zero but reuses every loaded weight
four times, which measured faster than per-sample sparse sums.

1. ``_gather`` (samples): read the uint8 image at its shifted position
   (``out[r, c] = in[r - dy, c - dx]``, zero fill), scale it into a dense row of
   ``X`` and list each block's union of nonzero pixels. No float copy of the
   data set exists; the batch's rows are the only floats made.
2. ``_forward`` per layer (samples): ``Z = A W + b`` over the block's union.
3. ``_activate`` per hidden layer (samples): ReLU, then dropout with the mask
   hashed from (seed, position, layer, unit) exactly as
   :func:`~fastmnist.backends.augment.dropout_keep` does, then the unions.
4. ``_output`` (samples): softmax, (smoothed) cross-entropy, the hit, and the
   gradient ``(p - target) / B`` in place of the logits.
5. ``_backward`` per hidden layer (samples): ``D_prev = (D W^T) * scale`` where
   the unit was active and kept (exactly 0 elsewhere), summing rows of a
   transposed copy ``W^T`` over the union of nonzero deltas.
6. ``_grad_update`` per layer (rows): ``dW[i] = sum_b A[b, i] D[b]`` over the
   samples where any of the block's four inputs is nonzero, in ascending
   ``b``, by the one thread that owns the block; the bias is one more item
   whose input is 1 for every sample. Each row is updated by the optimizer as
   soon as its sum is complete, while it is in cache, and copied into ``W^T``.

Whole rows are processed at a time: column tiles that keep a slab of ``W`` in
L2 measured slower on Zen 3 (per-pass overhead outweighs the bandwidth saved).

No sum is ever split across threads, and every sum runs in an order fixed by
the data: results are bit-identical for any thread count.

Skipping zero terms (pixels, units zeroed by ReLU or dropout) is exact for
finite values; with an Inf or NaN weight the reference gets NaN from
``0 * Inf`` where this skips the term, but the loss is non-finite either way.

Numerics: every scalar that enters a loop is cast to the model's dtype before
the call (learning rates, bias corrections, smoothing targets), so float32
kernels do no float64 arithmetic; the bias corrections ``1 - beta**t`` and the
AdamW decay factor ``1 - lr * wd`` are computed in float64 on the Python side
and then cast, exactly as :meth:`fastmnist.optim.Adam.update_reference` does.

Caching caveat: Numba's cache tracks this file only. The dropout hash is
:func:`fastmnist.backends.augment.splitmix64` compiled into these kernels; if
that function changes, clear ``__pycache__/_numba_general*`` (the equivalence
tests would fail until then).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ..model import Model
from ..numerics import N_CLASSES, N_PIXELS, pixel_scale
from ..optim import SGD, Adam
from ._fpenv import flush_denormals, restore_fp_state
from ._jit import CachedEntry
from ._jit import jit as _jit
from .augment import (
    _LAYER,
    _POSITION,
    DROPOUT_BITS,
    EpochOptions,
    dropout_threshold,
    splitmix64,
)

#: Width of the output layer, a compile-time constant so its loops unroll.
N_OUT = N_CLASSES

#: Rows of a weight matrix dealt to threads as one unit (round robin): rows of a
#: narrow layer, and the columns of ``W^T`` they are copied to, would otherwise
#: share cache lines between threads.
ROW_BLOCK = 16

# Optimizer kinds, one specialised update loop each.
KIND_SGD, KIND_MOMENTUM, KIND_NESTEROV, KIND_ADAM, KIND_ADAMW = range(5)

# Columns of the per-step hyperparameter table (all in the model's dtype).
HP_LR, HP_MOM, HP_WD, HP_B1, HP_B2, HP_OMB1, HP_OMB2, HP_C1, HP_C2, HP_EPS, HP_DECAY = range(11)
N_HP = 11


# The reference's hash, compiled: uint64 arithmetic wraps identically.
_splitmix64 = _jit(inline=True)(splitmix64)


# ---------------------------------------------------------------------------
# Inlined helpers. Column loops run over unsigned bounds: LLVM cannot prove a
# signed index is nonnegative (Numba's integer ops carry no no-wrap flags), so
# it would keep the negative-index wraparound in the loop and not vectorise it.
# ---------------------------------------------------------------------------


@_jit(inline=True)
def _axpy4(out, o0, off, j0, j1, M, idx, val, q, n):
    """``out[o0 + s, j - off] += sum_k val[q, k, s] * M[idx[q, k], j]`` for s < 4, j0 <= j < j1.

    The register-blocked core of every product here: list ``q`` names rows of
    ``M`` (``k`` ascending) with four coefficients each, one per output row.
    Four rows of ``M`` by four output rows per pass: each loaded element of
    ``M`` serves four FMAs and each load/store of ``out`` four more.
    """
    ja, jb, jo = np.uint64(j0), np.uint64(j1), np.uint64(off)
    r0 = np.uint64(o0)
    r1, r2, r3 = r0 + np.uint64(1), r0 + np.uint64(2), r0 + np.uint64(3)
    k = 0
    while k + 4 <= n:
        u0, u1, u2, u3 = idx[q, k], idx[q, k + 1], idx[q, k + 2], idx[q, k + 3]
        # x<p><s>: list entry k + p, output row s
        x00, x01, x02, x03 = val[q, k, 0], val[q, k, 1], val[q, k, 2], val[q, k, 3]
        x10, x11, x12, x13 = val[q, k + 1, 0], val[q, k + 1, 1], val[q, k + 1, 2], val[q, k + 1, 3]
        x20, x21, x22, x23 = val[q, k + 2, 0], val[q, k + 2, 1], val[q, k + 2, 2], val[q, k + 2, 3]
        x30, x31, x32, x33 = val[q, k + 3, 0], val[q, k + 3, 1], val[q, k + 3, 2], val[q, k + 3, 3]
        for j in range(ja, jb):
            w0, w1, w2, w3 = M[u0, j], M[u1, j], M[u2, j], M[u3, j]
            out[r0, j - jo] += x00 * w0 + x10 * w1 + x20 * w2 + x30 * w3
            out[r1, j - jo] += x01 * w0 + x11 * w1 + x21 * w2 + x31 * w3
            out[r2, j - jo] += x02 * w0 + x12 * w1 + x22 * w2 + x32 * w3
            out[r3, j - jo] += x03 * w0 + x13 * w1 + x23 * w2 + x33 * w3
        k += 4
    while k < n:
        u0 = idx[q, k]
        x00, x01, x02, x03 = val[q, k, 0], val[q, k, 1], val[q, k, 2], val[q, k, 3]
        for j in range(ja, jb):
            w0 = M[u0, j]
            out[r0, j - jo] += x00 * w0
            out[r1, j - jo] += x01 * w0
            out[r2, j - jo] += x02 * w0
            out[r3, j - jo] += x03 * w0
        k += 1


@_jit(inline=True)
def _union4(A, b0, i, lists, vals, q, m):
    """Append ``i`` to list ``q`` at ``m`` with ``A[b0 + s, i]``, s < 4; return the new end.

    The entry is always written and the end only moves if a value is nonzero:
    branch-free, as whether a unit fired is a coin flip to the predictor.
    ``A`` has at least ``b0 + 4`` rows.
    """
    zero = A.dtype.type(0)
    a0, a1, a2, a3 = A[b0, i], A[b0 + 1, i], A[b0 + 2, i], A[b0 + 3, i]
    lists[q, m] = i
    vals[q, m, 0] = a0
    vals[q, m, 1] = a1
    vals[q, m, 2] = a2
    vals[q, m, 3] = a3
    return m + np.uint64((a0 != zero) | (a1 != zero) | (a2 != zero) | (a3 != zero))


@_jit(inline=True)
def _update(P, S1, S2, r, j0, j1, acc, t, kind, decay, lr, mom, wd, b1, b2, omb1, omb2, c1, c2,
            eps, dfac):
    """Row ``r``, columns ``j0:j1`` of ``P`` take one optimizer step with gradient ``acc[t]``.

    The operations are those of ``SGD.update_reference`` / ``Adam.update_reference``
    in the same order; ``decay`` says whether weight decay applies to this row
    (weights with ``wd != 0``). ``S1``/``S2`` are the velocity (SGD) or the two
    moments (Adam); state a rule does not use is not touched.
    """
    ja, jb = np.uint64(j0), np.uint64(j1)
    # Without decay, g + 0 * p == g for finite p: one loop serves both cases.
    wdr = wd if decay else P.dtype.type(0)
    if kind == KIND_SGD:
        for j in range(ja, jb):
            P[r, j] -= lr * (acc[t, j - ja] + wdr * P[r, j])
    elif kind == KIND_MOMENTUM or kind == KIND_NESTEROV:
        if kind == KIND_NESTEROV:
            for j in range(ja, jb):
                g = acc[t, j - ja] + wdr * P[r, j]
                v = S1[r, j] * mom + g
                S1[r, j] = v
                P[r, j] -= lr * (g + mom * v)
        else:
            for j in range(ja, jb):
                v = S1[r, j] * mom + (acc[t, j - ja] + wdr * P[r, j])
                S1[r, j] = v
                P[r, j] -= lr * v
    else:
        # Adam: L2 decay enters the gradient; AdamW shrinks the weight first.
        l2 = wd if (decay and kind == KIND_ADAM) else P.dtype.type(0)
        shrink = dfac if (decay and kind == KIND_ADAMW) else P.dtype.type(1)
        for j in range(ja, jb):
            p = P[r, j]
            g = acc[t, j - ja] + l2 * p
            p = p * shrink
            m = S1[r, j] * b1 + omb1 * g
            v = S2[r, j] * b2 + omb2 * (g * g)
            S1[r, j] = m
            S2[r, j] = v
            P[r, j] = p - lr * (m / c1) / (np.sqrt(v / c2) + eps)


# ---------------------------------------------------------------------------
# Phases (parallel).
# ---------------------------------------------------------------------------


@_jit(parallel=True)
def _gather(images, order, shifts, has_shifts, first, nb, scale, X, ulist, uval, ucnt, n_threads):
    """Phase 1: dense, scaled, shifted rows of ``X``, and each block's union of nonzero pixels.

    Block ``q`` is samples ``4q .. 4q + 3``; rows of a last, partial block past
    ``nb`` are zero so that they add nothing anywhere.
    """
    zero = X.dtype.type(0)
    n_blocks = (nb + 3) // 4
    for t in prange(n_threads):
        fp = flush_denormals()
        for q in range(t * n_blocks // n_threads, (t + 1) * n_blocks // n_threads):
            for b in range(4 * q, 4 * q + 4):
                for p in range(N_PIXELS):
                    X[b, p] = zero
                if b >= nb:
                    continue
                g = order[first + b]
                dy, dx = 0, 0
                if has_shifts:
                    dy, dx = np.int64(shifts[first + b, 0]), np.int64(shifts[first + b, 1])
                c0, c1 = max(dx, 0), 28 + min(dx, 0)
                for r in range(max(dy, 0), 28 + min(dy, 0)):
                    src = (r - dy) * 28 - dx
                    for c in range(c0, c1):
                        X[b, r * 28 + c] = X.dtype.type(images[g, src + c]) * scale
            m = np.uint64(0)
            for p in range(N_PIXELS):
                m = _union4(X, 4 * q, p, ulist, uval, q, m)
            ucnt[q] = m
        restore_fp_state(fp)


@_jit(parallel=True)
def _forward(W, bias, ulist, uval, ucnt, Z, nb, n_threads):
    """Phase 2: ``Z[b] = bias + A[b] W`` over each block's union of nonzero inputs.

    Whole rows at a time: measured on Zen 3, column tiles that keep a slab of
    ``W`` in L2 lose more to per-pass overhead than they save in bandwidth, as
    the hardware prefetcher streams whole rows of ``W`` well.
    """
    n_out = W.shape[1]
    nj = np.uint64(n_out)
    n_blocks = (nb + 3) // 4
    for t in prange(n_threads):
        fp = flush_denormals()
        for q in range(t * n_blocks // n_threads, (t + 1) * n_blocks // n_threads):
            for b in range(4 * q, 4 * q + 4):
                for j in range(nj):
                    Z[b, j] = bias[0, j]
            _axpy4(Z, 4 * q, 0, 0, n_out, W, ulist, uval, q, ucnt[q])
        restore_fp_state(fp)


@_jit(parallel=True)
def _activate(A, nb, first, layer, use_dropout, seed, threshold, dscale, ulist, uval, ucnt,
              n_threads):
    """Phase 3: ``A = dropout(relu(Z))`` in place (``A`` holds ``Z``), and the block unions.

    The mask is the reference's: keep unit ``i`` of the sample at epoch
    position ``p`` iff the top bits of ``splitmix64(seed + p * POSITION +
    layer * LAYER + i)`` reach ``threshold``. Units ReLU already zeroed need no
    hash. NaN passes ReLU (as with ``np.maximum``) so divergence stays visible.
    Rows past ``nb`` are zeroed.
    """
    zero = A.dtype.type(0)
    width = A.shape[1]
    shift = np.uint64(64 - DROPOUT_BITS)
    lbase = np.uint64(layer) * _LAYER
    n_blocks = (nb + 3) // 4
    for t in prange(n_threads):
        fp = flush_denormals()
        for q in range(t * n_blocks // n_threads, (t + 1) * n_blocks // n_threads):
            for b in range(4 * q, 4 * q + 4):
                if b >= nb:
                    for i in range(width):
                        A[b, i] = zero
                    continue
                if use_dropout:
                    base = seed + np.uint64(first + b) * _POSITION + lbase
                    for i in range(width):
                        a = A[b, i]
                        if a <= zero:
                            a = zero
                        elif (_splitmix64(base + np.uint64(i)) >> shift) >= threshold:
                            a = a * dscale
                        else:
                            a = zero
                        A[b, i] = a
                else:
                    for i in range(width):
                        A[b, i] = zero if A[b, i] <= zero else A[b, i]
            m = np.uint64(0)
            for i in range(width):
                m = _union4(A, 4 * q, i, ulist, uval, q, m)
            ucnt[q] = m
        restore_fp_state(fp)


@_jit(parallel=True)
def _output(Z, labels, order, first, nb, smooth, on, off, loss, hit, n_threads):
    """Phase 4: logits ``Z[b]`` -> ``dLoss/dZ`` in place; per-sample loss and hit.

    In the reference's operation order, in the model's dtype: ``loss = lse -
    (on * z[y] + off * sum(z))`` (``lse - z[y]`` without smoothing), ``d = (p -
    off)``, ``d[y] -= on``, ``d / B``, where ``on = 1 - eps`` and ``off = eps / 10``.
    The hit uses the first maximal probability, as ``np.argmax`` does.
    """
    dt = Z.dtype.type
    nbf = dt(nb)
    for t in prange(n_threads):
        fp = flush_denormals()
        for b in range(t * nb // n_threads, (t + 1) * nb // n_threads):
            y = np.int64(labels[order[first + b]])
            m = Z[b, 0]
            for j in range(1, N_OUT):
                m = max(m, Z[b, j])
            total = dt(0)
            for j in range(N_OUT):
                total += Z[b, j]
            zy = Z[b, y]
            s = dt(0)
            for j in range(N_OUT):
                e = np.exp(Z[b, j] - m)
                Z[b, j] = e
                s += e
            lse = m + np.log(s)
            per = lse - (on * zy + off * total) if smooth else lse - zy
            loss[b] = np.float64(per)
            best = 0
            for j in range(N_OUT):
                p = Z[b, j] / s
                Z[b, j] = p
                if p > Z[b, best]:
                    best = j
            hit[b] = np.int64(best == y)
            if smooth:
                for j in range(N_OUT):
                    Z[b, j] = Z[b, j] - off
            Z[b, y] -= on
            for j in range(N_OUT):
                Z[b, j] = Z[b, j] / nbf
        restore_fp_state(fp)


@_jit(parallel=True)
def _backward(WT, D, A, Dprev, nb, ulist, uval, ucnt, use_dropout, dscale, n_threads):
    """Phase 5: ``Dprev = (D W^T) * dscale`` where ``A > 0``, else 0, per block of four samples.

    ``A`` is the layer's input after ReLU and dropout, so ``A > 0`` is exactly
    "ReLU active and kept". The product sums rows of ``WT`` (``W`` transposed,
    kept in step by :func:`_grad_update`) over the block's union of nonzero
    deltas: the same blocked kernel as the forward pass, which measured 1.5x
    faster than four-sample dot products along the rows of ``W``. Rows of
    ``D`` past ``nb`` must be zero.
    """
    n_in = WT.shape[1]
    n_out = D.shape[1]
    zero = WT.dtype.type(0)
    ni = np.uint64(n_in)
    n_blocks = (nb + 3) // 4
    for t in prange(n_threads):
        fp = flush_denormals()
        for q in range(t * n_blocks // n_threads, (t + 1) * n_blocks // n_threads):
            b0 = 4 * q
            m = np.uint64(0)
            for j in range(n_out):
                m = _union4(D, b0, j, ulist, uval, q, m)
            ucnt[q] = m
            for b in range(b0, b0 + 4):
                for i in range(ni):
                    Dprev[b, i] = zero
            _axpy4(Dprev, b0, 0, 0, n_in, WT, ulist, uval, q, np.int64(m))
            for b in range(b0, b0 + 4):
                if use_dropout:
                    for i in range(ni):
                        Dprev[b, i] = Dprev[b, i] * dscale if A[b, i] > zero else zero
                else:
                    for i in range(ni):
                        Dprev[b, i] = Dprev[b, i] if A[b, i] > zero else zero
        restore_fp_state(fp)


@_jit(parallel=True)
def _grad_update(A, D, W, bias, S1, S2, S1b, S2b, WT, keep_t, nb, clist, cval, acc, kind, hp,
                 n_threads):
    """Phase 6: each row's gradient ``sum_b A[b, i] D[b]`` and its optimizer step.

    Items are blocks of four rows of ``W`` (``4q .. 4q + 3``) and then the bias
    (an item whose one row has input 1 for every sample), dealt round robin in
    chunks of ``ROW_BLOCK`` rows. Per item, thread ``t`` lists the samples
    where any of its rows has a nonzero input (ascending) in ``clist[t]``,
    sums the rows into ``acc[4t .. 4t + 3]`` and updates them while in cache.
    A row's sum runs over its samples in ascending order whichever thread owns
    it; samples listed for a neighbouring row only add exact zeros. With
    ``keep_t``, updated rows are copied into the columns of ``WT``.
    """
    n_in, n_out = W.shape
    dt = W.dtype.type
    zero, one = dt(0), dt(1)
    nj = np.uint64(n_out)
    lr, mom, wd = hp[HP_LR], hp[HP_MOM], hp[HP_WD]
    b1, b2, omb1, omb2 = hp[HP_B1], hp[HP_B2], hp[HP_OMB1], hp[HP_OMB2]
    c1, c2, eps, dfac = hp[HP_C1], hp[HP_C2], hp[HP_EPS], hp[HP_DECAY]
    decay = wd != zero
    n_row_blocks = (n_in + 3) // 4
    n_items = n_row_blocks + 1
    chunk = ROW_BLOCK // 4
    n_chunks = (n_items + chunk - 1) // chunk
    for t in prange(n_threads):
        fp = flush_denormals()
        r0 = 4 * t
        for c in range(t, n_chunks, n_threads):
            for q in range(c * chunk, min((c + 1) * chunk, n_items)):
                m = np.uint64(0)
                i = 4 * q
                if q == n_row_blocks:
                    for b in range(nb):
                        clist[t, b] = b
                        cval[t, b, 0] = one
                        cval[t, b, 1] = zero
                        cval[t, b, 2] = zero
                        cval[t, b, 3] = zero
                    m = np.uint64(nb)
                elif i + 4 <= n_in:
                    for b in range(nb):
                        a0, a1, a2, a3 = A[b, i], A[b, i + 1], A[b, i + 2], A[b, i + 3]
                        clist[t, m] = b
                        cval[t, m, 0] = a0
                        cval[t, m, 1] = a1
                        cval[t, m, 2] = a2
                        cval[t, m, 3] = a3
                        m += np.uint64((a0 != zero) | (a1 != zero) | (a2 != zero) | (a3 != zero))
                else:  # the last, partial block of rows: missing rows take zeros
                    for b in range(nb):
                        clist[t, m] = b
                        nz = False
                        for s in range(4):
                            a = A[b, i + s] if i + s < n_in else zero
                            cval[t, m, s] = a
                            nz |= a != zero
                        m += np.uint64(nz)
                for r in range(r0, r0 + 4):
                    for j in range(nj):
                        acc[r, j] = zero
                _axpy4(acc, r0, 0, 0, n_out, D, clist, cval, t, np.int64(m))
                # One call site for rows and bias: each inlined copy of the five
                # update loops costs compile time.
                is_bias = q == n_row_blocks
                P, T1, T2 = (bias, S1b, S2b) if is_bias else (W, S1, S2)
                n_rows = 1 if is_bias else min(4, n_in - i)
                for s in range(n_rows):
                    _update(P, T1, T2, 0 if is_bias else i + s, 0, n_out, acc, r0 + s, kind,
                            decay and not is_bias, lr, mom, wd, b1, b2, omb1, omb2, c1, c2, eps,
                            dfac)
            if keep_t:
                # Once per chunk: each row of WT then gets one contiguous run (a
                # cache line in float32) instead of four scattered pieces.
                i0, i1 = c * ROW_BLOCK, min((c + 1) * ROW_BLOCK, n_in)
                for j in range(nj):
                    for i in range(i0, i1):
                        WT[j, i] = W[i, j]
        restore_fp_state(fp)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


@_jit()
def _transpose_into(WT, W):
    """``WT[:, :] = W.T``, written out: a slice assignment drags in string code at compile time."""
    n_in, n_out = W.shape
    for i in range(n_in):
        for j in range(n_out):
            WT[j, i] = W[i, j]


@_jit()
def _zero_rows(Z, first):
    """``Z[first:] = 0``."""
    zero = Z.dtype.type(0)
    for b in range(first, Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[b, j] = zero


@_jit()
def _run_epoch(
    W, B, S1W, S1B, S2W, S2B, WT, acts, dels, ulist, uval, ucnt, clist, cval, acc, loss, hit,
    images, labels, order, shifts, has_shifts, batch_size, hps, kind, scale, use_dropout, seed,
    threshold, dscale, smooth, on, off, n_threads,
):
    """Every mini-batch of ``order``: forward, loss, backward and the optimizer step.

    Parameters
    ----------
    W, B : tuples of 2-D arrays
        Weights ``(n[l], n[l+1])`` and biases as ``(1, n[l+1])`` views, updated in place.
    S1W, S1B, S2W, S2B : tuples of 2-D arrays
        Optimizer state shaped like ``W`` and ``B``: the velocity (SGD, ``S2``
        unused) or the first and second moments (Adam); updated in place.
    WT : tuple of 2-D arrays
        Scratch: ``WT[l]`` (``l >= 1``) is ``(n[l+1], n[l])`` for ``W[l].T``;
        ``WT[0]`` is unused.
    acts, dels : tuples of 2-D arrays
        Scratch with ``rows`` = ``batch`` rounded up to a multiple of four:
        ``acts[0]`` is the scaled input ``(rows, 784)``, ``acts[l]`` hidden
        layer ``l``; ``acts[L]`` is ``dels[L - 1]``, the logits then their
        gradient; ``dels[l]`` is ``(rows, n[l+1])``, the gradient of layer
        ``l``'s pre-activation.
    ulist, uval, ucnt : arrays
        Scratch per block of four samples: ``(rows // 4, max n)`` uint32,
        ``(rows // 4, max n, 4)`` and ``(rows // 4,)``, the union of the
        block's nonzero inputs with the four samples' values.
    clist, cval : arrays
        Scratch per thread: ``(n_threads, batch)`` uint32 and ``(n_threads,
        batch, 4)``, the samples where any of four rows has a nonzero input,
        with the values.
    acc : 2-D array
        Scratch ``(4 * n_threads, max n_out)``: gradient rows.
    loss, hit : arrays
        Scratch ``(batch,)`` float64 and int64.
    images, labels, order : arrays
        ``(n, 784)`` uint8 (or floats already scaled), ``(n,)`` uint8, and the
        int64 sample order: step ``s`` takes ``order[s * batch_size:][:batch_size]``.
    shifts : int8 array
        ``(len(order), 2)`` translation per position when ``has_shifts``.
    hps : 2-D array
        ``(n_steps, N_HP)`` per-step hyperparameters in the model's dtype.
    kind : int
        One of the ``KIND_*`` optimizer codes.
    scale, dscale, on, off : model-dtype scalars
        Pixel scale, dropout scale, smoothed target weights.
    use_dropout, smooth : bool
    seed, threshold : uint64
        Dropout hash seed and keep threshold.
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
    n_layers = len(W)
    for k in range(1, n_layers):
        _transpose_into(WT[k], W[k])
    loss_sum = 0.0
    correct = 0
    n_total = order.shape[0]
    for step in range((n_total + batch_size - 1) // batch_size):
        first = step * batch_size
        nb = min(batch_size, n_total - first)
        _gather(images, order, shifts, has_shifts, first, nb, scale, acts[0], ulist, uval, ucnt,
                n_threads)
        for k in range(n_layers):
            if k > 0:
                _activate(acts[k], nb, first, k - 1, use_dropout, seed, threshold, dscale, ulist,
                          uval, ucnt, n_threads)
            n_in, n_out = W[k].shape
            _forward(W[k], B[k], ulist, uval, ucnt, acts[k + 1], nb, n_threads)
        _output(acts[n_layers], labels, order, first, nb, smooth, on, off, loss, hit, n_threads)
        _zero_rows(acts[n_layers], nb)  # the padding of a partial block adds nothing backwards
        for q in range(nb):
            loss_sum += loss[q]
            correct += hit[q]
        for k in range(n_layers - 1, 0, -1):
            _backward(WT[k], dels[k], acts[k], dels[k - 1], nb, ulist, uval, ucnt, use_dropout,
                      dscale, n_threads)
        hp = hps[step]
        for k in range(n_layers):
            _grad_update(acts[k], dels[k], W[k], B[k], S1W[k], S2W[k], S1B[k], S2B[k], WT[k],
                         k > 0, nb, clist, cval, acc, kind, hp, n_threads)
    return loss_sum, correct


# ---------------------------------------------------------------------------
# Python entry point
# ---------------------------------------------------------------------------


# Loaded from Numba's cache, compiled in a child process when missing: see _jit.
_RUN_EPOCH = CachedEntry(_run_epoch)


def _rows(arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Biases as ``(1, n)`` views, so the kernels treat every parameter as a matrix."""
    return tuple(a.reshape(1, -1) for a in arrays)


def _scratch(model: Model, batch: int, n_threads: int) -> tuple:
    """Scratch for batches of up to ``batch`` samples, in :func:`_run_epoch`'s argument order.

    ``(WT, acts, dels, ulist, uval, ucnt, clist, cval, acc, loss, hit)``; see
    :func:`_run_epoch` for the layout.
    """
    dtype, sizes = model.dtype, model.sizes
    rows = -(-batch // 4) * 4  # blocks of four samples: room for a padded last block
    hidden = [np.empty((rows, n), dtype=dtype) for n in sizes[1:-1]]
    dels = tuple(np.empty((rows, n), dtype=dtype) for n in sizes[1:])
    acts = (np.empty((rows, N_PIXELS), dtype=dtype), *hidden, dels[-1])
    width = max(sizes[:-1])
    wt = (np.empty((1, 1), dtype=dtype),
          *(np.empty((n_out, n_in), dtype=dtype) for n_in, n_out in zip(sizes[1:-1], sizes[2:])))
    return (
        wt,
        acts,
        dels,
        np.empty((rows // 4, width), dtype=np.uint32),  # ulist
        np.empty((rows // 4, width, 4), dtype=dtype),  # uval
        np.empty(rows // 4, dtype=np.int64),  # ucnt
        np.empty((n_threads, batch), dtype=np.uint32),  # clist
        np.empty((n_threads, batch, 4), dtype=dtype),  # cval
        np.empty((4 * n_threads, max(sizes[1:])), dtype=dtype),  # acc
        np.empty(batch, dtype=np.float64),  # loss
        np.empty(batch, dtype=np.int64),  # hit
    )


def _hyperparameters(optimizer: SGD | Adam, dtype: np.dtype, lrs: np.ndarray,
                     n_steps: int) -> tuple[int, np.ndarray]:
    """The optimizer's kind code and its ``(n_steps, N_HP)`` per-step table in ``dtype``.

    Casts follow ``update_reference``: scalars become ``dtype`` before use, and
    ``1 - beta**t`` and ``1 - lr * wd`` are computed in float64 first.
    """
    dt = dtype.type
    hps = np.zeros((n_steps, N_HP), dtype=dtype)
    lr64 = [float(lr) for lr in lrs[:n_steps]]
    hps[:, HP_LR] = [dt(lr) for lr in lr64]
    hps[:, HP_WD] = dt(optimizer.weight_decay)
    if isinstance(optimizer, SGD):
        hps[:, HP_MOM] = dt(optimizer.momentum)
        if not optimizer.momentum:
            kind = KIND_SGD
        else:
            kind = KIND_NESTEROV if optimizer.nesterov else KIND_MOMENTUM
        return kind, hps
    if not isinstance(optimizer, Adam):
        raise TypeError(f"unsupported optimizer {type(optimizer).__name__}")
    b1, b2 = dt(optimizer.beta1), dt(optimizer.beta2)
    hps[:, HP_B1], hps[:, HP_B2] = b1, b2
    hps[:, HP_OMB1], hps[:, HP_OMB2] = dt(1) - b1, dt(1) - b2
    hps[:, HP_EPS] = dt(optimizer.eps)
    for s in range(n_steps):
        t = optimizer.step + s + 1
        hps[s, HP_C1] = dt(1.0 - optimizer.beta1**t)
        hps[s, HP_C2] = dt(1.0 - optimizer.beta2**t)
        hps[s, HP_DECAY] = dt(1.0 - lr64[s] * optimizer.weight_decay)
    return (KIND_ADAMW if optimizer.decoupled else KIND_ADAM), hps


def train_epoch_general(
    model: Model,
    optimizer: SGD | Adam,
    images: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    lrs: np.ndarray,
    options: EpochOptions | None = None,
    n_threads: int | None = None,
) -> tuple[float, int]:
    """Train one epoch in place, exactly as ``NumpyBackend.train_epoch`` defines it.

    Parameters
    ----------
    model : Model
        Weights and biases, updated in place.
    optimizer : SGD or Adam
        Its state arrays are updated in place (created by ``init_state`` if
        missing); an Adam's ``step`` advances by the number of mini-batches.
    images : ndarray
        ``(n, 784)`` uint8 pixels (read directly, never copied to floats), or
        floats already scaled to [0, 1].
    labels : ndarray
        ``(n,)`` integers in 0-9.
    order : ndarray
        Sample indices; step ``s`` takes ``order[s * batch_size:(s + 1) * batch_size]``.
    batch_size : int
        Samples per step; the last batch may be partial.
    lrs : ndarray
        Learning rate of each step, at least ``ceil(len(order) / batch_size)`` of them.
    options : EpochOptions, optional
        Dropout, label smoothing, per-position shifts and the dropout seed.
    n_threads : int, optional
        Threads to split each phase over; ``numba.get_num_threads()`` by
        default. The results do not depend on it.

    Returns
    -------
    loss_sum : float
        Sum of the per-sample losses, each from its batch's forward pass.
    correct : int
        Samples predicted correctly, each before its batch's update.
    """
    opts = options or EpochOptions()
    optimizer.init_state(model.weights, model.biases)
    dtype = model.dtype
    dt = dtype.type
    n_total, batch_size = len(order), int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_total == 0:
        return 0.0, 0
    n_steps = -(-n_total // batch_size)
    if len(lrs) < n_steps:
        raise ValueError(f"need {n_steps} learning rates, got {len(lrs)}")
    if n_threads is None:
        n_threads = numba.get_num_threads()
    n_threads = max(1, int(n_threads))
    if images.dtype == np.uint8:
        x, scale = np.ascontiguousarray(images), pixel_scale(dtype)
    else:
        x, scale = np.ascontiguousarray(images, dtype=dtype), dt(1)
    if opts.shifts is not None:
        shifts = np.ascontiguousarray(opts.shifts, dtype=np.int8)
        if shifts.shape != (n_total, 2):
            raise ValueError(f"shifts must be ({n_total}, 2), got {shifts.shape}")
    else:
        shifts = np.zeros((1, 2), dtype=np.int8)

    scratch = _scratch(model, min(batch_size, n_total), n_threads)

    kind, hps = _hyperparameters(optimizer, dtype, np.asarray(lrs, dtype=np.float64), n_steps)
    if isinstance(optimizer, SGD):
        s1w, s1b = optimizer.velocity_w, optimizer.velocity_b
        s2w, s2b = s1w, s1b  # never touched by the SGD rules
    else:
        s1w, s1b, s2w, s2b = optimizer.m_w, optimizer.m_b, optimizer.v_w, optimizer.v_b
    eps = float(opts.label_smoothing)
    # The kernels index without bounds checks: a bad index must fail here, not corrupt memory.
    sample_order = np.ascontiguousarray(order, dtype=np.int64)
    if sample_order.min() < 0 or sample_order.max() >= len(x) or x.shape[1:] != (N_PIXELS,):
        raise ValueError("order must index the rows of a (n, 784) image array")
    y = np.ascontiguousarray(labels, dtype=np.uint8)
    used = np.asarray(labels)[sample_order] if len(y) == len(x) else y
    if len(y) != len(x) or used.min() < 0 or used.max() >= N_CLASSES:
        raise ValueError("labels must be one integer in 0-9 per image")
    # In-place updates need the very arrays the model and optimizer hold.
    for a in [*model.parameters(), *optimizer.state_arrays()]:
        if a.dtype != dtype or not a.flags.c_contiguous:
            raise ValueError("parameters and optimizer state must be C-contiguous "
                             f"{dtype.name} arrays")
    loss_sum, correct = _RUN_EPOCH(
        tuple(model.weights), _rows(model.biases), tuple(s1w), _rows(s1b), tuple(s2w),
        _rows(s2b), *scratch,
        x, y, sample_order, shifts, opts.shifts is not None, batch_size, hps, kind, scale,
        bool(opts.dropout), np.uint64(opts.seed), np.uint64(dropout_threshold(opts.dropout)),
        dt(1.0 / (1.0 - opts.dropout)), bool(eps), dt(1 - eps), dt(eps / N_CLASSES), n_threads,
    )
    if isinstance(optimizer, Adam):
        optimizer.step += n_steps
    return float(loss_sum), int(correct)
