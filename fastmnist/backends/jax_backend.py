"""A JAX peer: the strongest CPU baseline, written the way a JAX user would write it.

One ``jax.jit``-compiled function runs a whole epoch: a ``jax.lax.scan`` over the
full mini-batches (indices ``(steps, batch_size)`` and one learning rate per step
are scanned over) and then, if ``len(order) % batch_size``, the last partial batch
as one more call of the same step function inside the same compiled program. The
data set lives on the device once per (array, dtype), so an epoch is one dispatch.

The update is :meth:`fastmnist.optim.SGD.update_reference` written in ``jnp``:
L2 weight decay on the weight matrices only, heavy-ball or Nesterov momentum,
velocities untouched when ``momentum == 0``. Which of those parts exist is
compiled in; the momentum, decay and learning-rate values are runtime inputs,
so changing them does not recompile.

float64 models run inside ``jax.enable_x64(True)``, a thread-local context, so
enabling them changes nothing for other JAX code in the process; float32 models
are cast explicitly and stay float32 either way.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..model import Model
from ..numerics import N_CLASSES, N_PIXELS, scale_images
from ..optim import SGD
from .augment import EpochOptions
from .base import BackendBase, ConvertedArrays, EpochResult, Gradients

#: Training-set size warmup compiles for when it has seen no data yet: MNIST's.
DEFAULT_WARMUP_SAMPLES = 60_000

# predict_proba pads each chunk to a power of two (at most this), so evaluating many
# different sizes compiles a handful of programs rather than one per size.
_PREDICT_CHUNK = 8192

Params = tuple[tuple[jax.Array, jax.Array], ...]


class _Rule(NamedTuple):
    """The static shape of the update: which terms of the SGD rule are present."""

    momentum: bool
    nesterov: bool
    weight_decay: bool


# -- the maths (pure functions of arrays) --------------------------------------------


def _pre_activations(params: Params, x: jax.Array) -> list[jax.Array]:
    zs = []
    last = len(params) - 1
    for i, (w, b) in enumerate(params):
        z = x @ w + b
        zs.append(z)
        if i < last:
            x = jax.nn.relu(z)
    return zs


def _loss(params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
    logits = _pre_activations(params, x)[-1]
    log_probs = jax.nn.log_softmax(logits, axis=1)
    per_sample = -jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0]
    return per_sample.mean(), (per_sample, logits)


def _sgd(
    params: Params, grads: Params, vels: Params, lr: jax.Array, hyper: tuple, rule: _Rule
) -> tuple[Params, Params]:
    momentum, weight_decay = hyper
    new_params, new_vels = [], []
    for layer, ((w, b), (gw, gb)) in enumerate(zip(params, grads, strict=True)):
        if rule.weight_decay:  # weights only, as torch.optim.SGD with bias groups at 0
            gw = gw + weight_decay * w
        if rule.momentum:
            vw, vb = vels[layer]
            vw = momentum * vw + gw
            vb = momentum * vb + gb
            new_vels.append((vw, vb))
            if rule.nesterov:
                gw, gb = gw + momentum * vw, gb + momentum * vb
            else:
                gw, gb = vw, vb
        new_params.append((w - lr * gw, b - lr * gb))
    return tuple(new_params), tuple(new_vels)


def _train_step(carry, batch, *, x_all, y_all, hyper, rule: _Rule):
    """One mini-batch: loss and gradients at the current weights, then the update."""
    params, vels = carry
    idx, lr = batch
    x = jnp.take(x_all, idx, axis=0)
    y = jnp.take(y_all, idx, axis=0)
    (_, (per_sample, logits)), grads = jax.value_and_grad(_loss, has_aux=True)(params, x, y)
    correct = (jnp.argmax(logits, axis=1) == y).sum(dtype=jnp.int32)
    return _sgd(params, grads, vels, lr, hyper, rule), (per_sample, correct)


def _epoch(params, vels, x_all, y_all, idx_full, lrs_full, idx_tail, lr_tail, hyper, *, rule):
    step = functools.partial(_train_step, x_all=x_all, y_all=y_all, hyper=hyper, rule=rule)
    carry, (losses, correct) = jax.lax.scan(step, (params, vels), (idx_full, lrs_full))
    if idx_tail.shape[0]:  # static: the partial batch exists or it does not
        carry, (tail_losses, tail_correct) = step(carry, (idx_tail, lr_tail))
    else:
        tail_losses, tail_correct = jnp.zeros((0,), losses.dtype), jnp.zeros((), jnp.int32)
    return carry, losses, correct, tail_losses, tail_correct


@jax.jit
def _activations(params: Params, x: jax.Array) -> list[jax.Array]:
    zs = _pre_activations(params, x)
    return [x, *(jax.nn.relu(z) for z in zs[:-1]), jax.nn.softmax(zs[-1], axis=1)]


@jax.jit
def _probabilities(params: Params, x: jax.Array) -> jax.Array:
    return jax.nn.softmax(_pre_activations(params, x)[-1], axis=1)


@jax.jit
def _gradients(params: Params, x: jax.Array, y: jax.Array):
    (loss, (_, logits)), grads = jax.value_and_grad(_loss, has_aux=True)(params, x, y)
    return loss, jax.nn.softmax(logits, axis=1), grads


# -- helpers -------------------------------------------------------------------------


def _precision(dtype: np.dtype) -> contextlib.AbstractContextManager:
    # Without x64, JAX silently turns float64 inputs into float32.
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def _device_params(model: Model) -> Params:
    return tuple(
        (jnp.asarray(w, dtype=model.dtype), jnp.asarray(b, dtype=model.dtype))
        for w, b in zip(model.weights, model.biases, strict=True)
    )


def _padded_rows(n: int) -> int:
    return min(_PREDICT_CHUNK, 1 << max(n - 1, 0).bit_length())


class JaxBackend(BackendBase):
    """Whole epochs as one XLA program: ``jax.jit`` + ``jax.lax.scan``.

    Compiled epochs are kept per (layer sizes, dtype, update terms, data set size,
    batch size); :meth:`warmup` compiles ahead of time without running anything.
    """

    name = "jax"

    def __init__(self) -> None:
        # Two data sets (e.g. one array in both dtypes) at ~190 MB each for MNIST in float32.
        self._images = ConvertedArrays(size=2)
        self._labels = ConvertedArrays(size=4)
        self._executables: dict[tuple, Any] = {}
        self._last_n: int | None = None
        #: Why a thread limit could not be applied, once one could not.
        self.thread_limit_note: str | None = None

    # -- data ---------------------------------------------------------------------------

    def _data(self, images: np.ndarray, dtype: np.dtype) -> jax.Array:
        # Scaled on the host by scale_images (uint8 * pixel_scale(dtype)): the same bits
        # as every other backend, paid once per array.
        return self._images.get(
            images, np.dtype(dtype).str, lambda a: jax.device_put(scale_images(a, dtype))
        )

    def _targets(self, labels: np.ndarray) -> jax.Array:
        return self._labels.get(
            labels, "int32", lambda a: jax.device_put(np.asarray(a, dtype=np.int32))
        )

    # -- compilation --------------------------------------------------------------------

    def _executable(
        self, model: Model, optimizer: SGD, n_images: int, n_order: int, batch_size: int
    ):
        """The compiled epoch for this configuration, compiled on first request."""
        dt = model.dtype
        rule = _Rule(bool(optimizer.momentum), optimizer.nesterov, bool(optimizer.weight_decay))
        steps, tail = divmod(n_order, batch_size)
        key = (tuple(model.sizes), dt.str, rule, n_images, n_order, batch_size)
        executable = self._executables.get(key)
        if executable is None:
            spec = jax.ShapeDtypeStruct
            scalar = spec((), dt)
            params = tuple(
                (spec(w.shape, dt), spec(b.shape, dt))
                for w, b in zip(model.weights, model.biases, strict=True)
            )
            args = (
                params,
                params if rule.momentum else (),
                spec((n_images, N_PIXELS), dt),
                spec((n_images,), np.int32),
                spec((steps, batch_size), np.int32),
                spec((steps,), dt),
                spec((tail,), np.int32),
                scalar,
                (scalar, scalar),
            )
            with _precision(dt):
                lowered = jax.jit(functools.partial(_epoch, rule=rule)).lower(*args)
                executable = lowered.compile()
            self._executables[key] = executable
        return executable

    def warmup(
        self, model: Model, optimizer: SGD, batch_size: int, n_samples: int | None = None,
        options: EpochOptions | None = None,
    ) -> None:
        """Compile the epoch for this configuration ahead of time, running nothing.

        The compiled program depends on the number of training samples, which the
        Protocol does not pass; ``n_samples`` defaults to the size of the last data
        set trained on, else :data:`DEFAULT_WARMUP_SAMPLES` (MNIST's 60000). Other
        sizes compile on their first epoch.
        """
        self._require_plain_sgd(optimizer, options)
        n = n_samples or self._last_n or DEFAULT_WARMUP_SAMPLES
        self._executable(model, optimizer, int(n), int(n), int(batch_size))

    # -- Protocol -----------------------------------------------------------------------

    def predict_proba(self, model: Model, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), N_CLASSES), dtype=model.dtype)
        with _precision(model.dtype):
            params = _device_params(model)
            for s in range(0, len(images), _PREDICT_CHUNK):
                x = scale_images(images[s : s + _PREDICT_CHUNK], model.dtype)
                rows = len(x)
                padded = _padded_rows(rows)
                if padded != rows:
                    x = np.concatenate([x, np.zeros((padded - rows, N_PIXELS), x.dtype)])
                out[s : s + rows] = np.asarray(_probabilities(params, x))[:rows]
        return out

    def forward(self, model: Model, images: np.ndarray) -> list[np.ndarray]:
        with _precision(model.dtype):
            x = scale_images(images, model.dtype)
            return [np.asarray(a) for a in _activations(_device_params(model), x)]

    def gradients(self, model: Model, images: np.ndarray, labels: np.ndarray) -> Gradients:
        with _precision(model.dtype):
            x = scale_images(images, model.dtype)
            y = np.asarray(labels, dtype=np.int32)
            loss, probs, grads = _gradients(_device_params(model), x, y)
            return Gradients(
                float(loss),
                np.asarray(probs),
                [np.asarray(gw) for gw, _ in grads],
                [np.asarray(gb) for _, gb in grads],
            )

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
        self._require_plain_sgd(optimizer, options)
        optimizer.init_state(model.weights, model.biases)
        dt = model.dtype
        n = len(order)
        order = np.asarray(order)
        # Gathers on the device clamp out-of-range indices; NumPy would raise, so do we.
        if n and (order.min() < 0 or order.max() >= len(images)):
            raise IndexError("order holds indices outside the data set")
        steps, tail = divmod(n, batch_size)
        lrs = np.asarray(lrs, dtype=dt)
        rule = _Rule(bool(optimizer.momentum), optimizer.nesterov, bool(optimizer.weight_decay))
        with _precision(dt):
            executable = self._executable(model, optimizer, len(images), n, batch_size)
            x_all = self._data(images, dt)
            y_all = self._targets(labels)
            params = _device_params(model)
            vels = (
                tuple(
                    (jnp.asarray(vw, dtype=dt), jnp.asarray(vb, dtype=dt))
                    for vw, vb in zip(optimizer.velocity_w, optimizer.velocity_b, strict=True)
                )
                if rule.momentum
                else ()
            )
            idx = order.astype(np.int32)
            (params, vels), losses, correct, tail_losses, tail_correct = executable(
                params,
                vels,
                x_all,
                y_all,
                idx[: steps * batch_size].reshape(steps, batch_size),
                lrs[:steps],
                idx[steps * batch_size :],
                lrs[steps] if tail else np.zeros((), dt),
                (np.asarray(optimizer.momentum, dt), np.asarray(optimizer.weight_decay, dt)),
            )
            for (w, b), (new_w, new_b) in zip(
                zip(model.weights, model.biases, strict=True), params, strict=True
            ):
                w[...] = np.asarray(new_w)
                b[...] = np.asarray(new_b)
            if rule.momentum:  # without momentum the velocities are left as they were
                for (vw, vb), (new_vw, new_vb) in zip(
                    zip(optimizer.velocity_w, optimizer.velocity_b, strict=True), vels, strict=True
                ):
                    vw[...] = np.asarray(new_vw)
                    vb[...] = np.asarray(new_vb)
            loss_sum = float(np.asarray(losses).sum(dtype=np.float64))
            loss_sum += float(np.asarray(tail_losses).sum(dtype=np.float64))
            n_correct = int(np.asarray(correct).sum()) + int(tail_correct)
        self._last_n = len(images)
        return EpochResult(loss_sum, n_correct, n)

    @contextlib.contextmanager
    def limit_threads(self, threads: int | None) -> Iterator[None]:
        """Honour a thread limit only where XLA can: before the CPU client starts.

        XLA sizes its CPU thread pool once, when the first JAX computation creates
        the CPU client, and offers no way to resize it. So:

        * ``threads`` >= the CPUs this process may use: nothing to do.
        * otherwise, if no JAX computation has run yet in this process,
          ``--xla_cpu_multi_thread_eigen=false`` is added to ``XLA_FLAGS``: XLA's
          matrix products then run on the calling thread (so the limit is met, as
          one thread, for the rest of the process, whatever later contexts ask).
        * otherwise nothing can be done: the limit is ignored, the reason is kept
          in :attr:`thread_limit_note` and a ``RuntimeWarning`` is issued.

        To run JAX on fewer threads reliably, set ``XLA_FLAGS`` (or the process's
        CPU affinity, e.g. ``taskset``) before Python starts.
        """
        if threads is not None:
            self._request_threads(int(threads))
        yield

    def _request_threads(self, threads: int) -> None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        available = available or os.cpu_count() or 1
        if threads >= available:
            return
        flag = "--xla_cpu_multi_thread_eigen=false"
        current = os.environ.get("XLA_FLAGS", "")
        if flag in current:
            return
        if not _cpu_client_started():
            os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()
            return
        self.thread_limit_note = (
            f"JAX's CPU client was already running with up to {available} threads; a limit "
            f"of {threads} can only be set (via XLA_FLAGS) before the first JAX computation"
        )
        warnings.warn(self.thread_limit_note, RuntimeWarning, stacklevel=3)


def _cpu_client_started() -> bool:
    """True once XLA has read XLA_FLAGS (it does so when its first backend starts)."""
    try:
        from jax._src import xla_bridge
    except ImportError:  # private module moved: assume the worst
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())
