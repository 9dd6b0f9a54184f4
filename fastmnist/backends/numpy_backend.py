"""The reference backend: plain vectorised NumPy, the definition of correct.

Every other backend is tested against this one. Clarity wins over speed here,
but it is still a fair baseline: the matrix products go to BLAS.
"""

from __future__ import annotations

import numpy as np

from ..model import Model
from ..numerics import N_CLASSES, scale_images
from ..optim import Optimizer
from .augment import (
    EpochOptions,
    dropout_keep,
    dropout_threshold,
    shift_images,
)
from .base import BackendBase, EpochResult, Gradients


def dense_forward(a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    # a is (B, n_in), w is (n_in, n_out), b is (n_out,) -> (B, n_out)
    return a @ w + b


def relu_forward(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0)


def softmax_forward(logits: np.ndarray) -> np.ndarray:
    # Subtracting the row max keeps exp() from overflowing; it cancels exactly.
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def crossentropy_forward(
    logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0
) -> np.ndarray:
    # logits is (B, 10); per-sample loss logsumexp(z) - target . z, computed stably,
    # with target = (1 - eps) onehot(y) + eps / 10.
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    picked = logits[np.arange(len(labels)), labels]
    if not smoothing:
        return lse - picked
    dt = logits.dtype.type
    return lse - (dt(1 - smoothing) * picked + dt(smoothing / N_CLASSES) * logits.sum(axis=1))


def softmax_crossentropy_backward(
    probs: np.ndarray, labels: np.ndarray, smoothing: float = 0.0
) -> np.ndarray:
    # d(mean loss)/d(logits) = (probs - target) / B
    dt = probs.dtype.type
    d = probs - dt(smoothing / N_CLASSES) if smoothing else probs.copy()
    d[np.arange(len(labels)), labels] -= dt(1 - smoothing)
    return d / dt(len(labels))


def dropout_forward(a: np.ndarray, keep: np.ndarray, scale: np.floating) -> np.ndarray:
    # Inverted dropout: kept units are scaled so the expectation is unchanged.
    return np.where(keep, a * scale, 0).astype(a.dtype, copy=False)


dropout_backward = dropout_forward  # the same mask and scale apply to the gradient


def dense_backward(
    a: np.ndarray, w: np.ndarray, dz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # a is (B, n_in), dz is (B, n_out) -> dW (n_in, n_out), db (n_out,), da (B, n_in)
    return a.T @ dz, dz.sum(axis=0), dz @ w.T


def relu_backward(da: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, da, 0).astype(da.dtype, copy=False)


def _forward_all(
    model: Model, x: np.ndarray, keeps: list[np.ndarray] | None = None,
    scale: np.floating | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pre-activations ``zs`` and activations ``acts`` (acts[0] is x, logits last in zs).

    ``keeps[i]`` is hidden layer ``i``'s dropout mask, ``(B, width)``, or None.
    """
    acts, zs = [x], []
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        z = dense_forward(acts[-1], w, b)
        zs.append(z)
        if i < last:
            a = relu_forward(z)
            acts.append(a if keeps is None else dropout_forward(a, keeps[i], scale))
    return zs, acts


def _gradients(
    model: Model, x: np.ndarray, labels: np.ndarray, keeps: list[np.ndarray] | None = None,
    scale: np.floating | None = None, smoothing: float = 0.0,
):
    zs, acts = _forward_all(model, x, keeps, scale)
    logits = zs[-1]
    probs = softmax_forward(logits)
    per_sample = crossentropy_forward(logits, labels, smoothing)
    dz = softmax_crossentropy_backward(probs, labels, smoothing)
    gw: list[np.ndarray] = [None] * len(model.weights)  # type: ignore[list-item]
    gb: list[np.ndarray] = [None] * len(model.weights)  # type: ignore[list-item]
    for i in range(len(model.weights) - 1, -1, -1):
        gw[i], gb[i], da = dense_backward(acts[i], model.weights[i], dz)
        if i > 0:
            if keeps is not None:
                da = dropout_backward(da, keeps[i - 1], scale)
            dz = relu_backward(da, zs[i - 1])
    return per_sample, probs, gw, gb


class NumpyBackend(BackendBase):
    """Reference implementation in vectorised NumPy."""

    name = "numpy"
    # OpenBLAS's idle threads poll (sched_yield) for about a second: measured
    # here, Numba's next epoch ran at 0.6x its speed after 0.3 s, at full speed after 1.5 s.
    spin_seconds = 1.5

    def forward(self, model: Model, images: np.ndarray) -> list[np.ndarray]:
        zs, acts = _forward_all(model, scale_images(images, model.dtype))
        return [*acts, softmax_forward(zs[-1])]

    def predict_proba(self, model: Model, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), N_CLASSES), dtype=model.dtype)
        # Chunks bound the float copy of the input to a few MB whatever n is.
        chunk = 8192
        for s in range(0, len(images), chunk):
            zs, _ = _forward_all(model, scale_images(images[s : s + chunk], model.dtype))
            out[s : s + chunk] = softmax_forward(zs[-1])
        return out

    def gradients(self, model: Model, images: np.ndarray, labels: np.ndarray) -> Gradients:
        x = scale_images(images, model.dtype)
        per_sample, probs, gw, gb = _gradients(model, x, np.asarray(labels, dtype=np.intp))
        return Gradients(float(per_sample.mean()), probs, gw, gb)

    def train_epoch(
        self,
        model: Model,
        optimizer: Optimizer,
        images: np.ndarray,
        labels: np.ndarray,
        order: np.ndarray,
        batch_size: int,
        lrs: np.ndarray,
        options: EpochOptions | None = None,
    ) -> EpochResult:
        optimizer.init_state(model.weights, model.biases)
        opts = options or EpochOptions()
        params = model.parameters()
        decays = [True, False] * len(model.weights)
        threshold = dropout_threshold(opts.dropout)
        scale = model.dtype.type(1.0 / (1.0 - opts.dropout))
        loss_sum, correct = 0.0, 0
        # A diverging run overflows; the trainer detects that from the result.
        with np.errstate(over="ignore", invalid="ignore"):
            for step, start in enumerate(range(0, len(order), batch_size)):
                idx = order[start : start + batch_size]
                positions = np.arange(start, start + len(idx))
                pixels = images[idx]  # (B, 784) uint8
                if opts.shifts is not None:
                    pixels = shift_images(pixels, opts.shifts[positions])
                x = scale_images(pixels, model.dtype)  # (B, 784)
                y = labels[idx].astype(np.intp)  # (B,)
                keeps = None
                if opts.dropout:
                    keeps = [dropout_keep(opts.seed, positions, layer, width, threshold)
                             for layer, width in enumerate(model.hidden)]
                per_sample, probs, gw, gb = _gradients(
                    model, x, y, keeps, scale, opts.label_smoothing
                )
                loss_sum += float(per_sample.sum(dtype=np.float64))
                correct += int((probs.argmax(axis=1) == y).sum())
                grads = [g for pair in zip(gw, gb) for g in pair]
                optimizer.update_reference(params, grads, decays, float(lrs[step]))
        return EpochResult(loss_sum, correct, len(order))
