"""A PyTorch peer: the training loop a PyTorch user would write, for comparison.

Nothing here is tuned beyond what an ordinary PyTorch script does: ``x @ W + b``
layers (one ``torch.addmm``, as ``nn.Linear`` computes), ``F.cross_entropy``,
``loss.backward()`` and ``torch.optim.SGD`` with two parameter groups (weights
decayed, biases not), one Python-level step per mini-batch. The data set is
converted to a tensor once and kept, as a user would keep a preloaded
``TensorDataset``.

The parameters are ``torch.from_numpy`` views of the model's arrays and the
momentum buffers are views of the optimizer's velocities, so the in-place updates
of ``torch.optim.SGD`` land directly in the NumPy state and carry across epochs
exactly as the reference's do.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..model import Model
from ..numerics import N_CLASSES, N_PIXELS, scale_images
from ..optim import SGD
from .augment import EpochOptions
from .base import BackendBase, ConvertedArrays, EpochResult, Gradients, scoped_threads

# Rows per chunk in predict_proba: bounds the float copy of the input whatever n is.
_PREDICT_CHUNK = 8192


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory (a copy if it is read-only: torch cannot flag it)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _pre_activations(
    weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor
) -> list[torch.Tensor]:
    """Pre-activations of every layer; the last is the logits."""
    zs = []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        # nn.Linear's maths for W stored (n_in, n_out): x @ W + b in one addmm. (F.linear
        # on W.t() is the same product but leaves W's gradient transposed in memory,
        # which makes every optimizer step walk it with strides: ~10% slower at 512.)
        z = torch.addmm(b, x, w)
        zs.append(z)
        if i < last:
            x = F.relu(z)
    return zs


class TorchBackend(BackendBase):
    """Plain PyTorch on the CPU: autograd and ``torch.optim.SGD``, one step per batch."""

    name = "torch"

    def __init__(self) -> None:
        # Two data sets (e.g. one array in both dtypes) at ~190 MB each for MNIST in float32.
        self._images = ConvertedArrays(size=2)
        self._labels = ConvertedArrays(size=4)

    # -- data ---------------------------------------------------------------------------

    def _data(self, images: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        # scale_images multiplies uint8 by pixel_scale(dtype), so every backend sees the
        # same bits; done once per array, which is what makes repeated epochs cheap.
        return self._images.get(
            images,
            np.dtype(dtype).str,
            lambda a: _tensor(np.ascontiguousarray(scale_images(a, dtype))),
        )

    def _targets(self, labels: np.ndarray) -> torch.Tensor:
        # cross_entropy wants int64 class indices.
        return self._labels.get(
            labels, "int64", lambda a: _tensor(np.asarray(a, dtype=np.int64))
        )

    @staticmethod
    def _params(model: Model, requires_grad: bool = False) -> tuple[list, list]:
        """Tensors of the parameters, for computing with (not for training)."""
        weights = [_tensor(w).requires_grad_(requires_grad) for w in model.weights]
        biases = [_tensor(b).requires_grad_(requires_grad) for b in model.biases]
        return weights, biases

    @staticmethod
    def _trainable(model: Model) -> tuple[list, list]:
        """``nn.Parameter`` views of the model's arrays, for the optimizer to update."""
        if not all(p.flags.writeable for p in model.parameters()):
            # NumPy's in-place update would refuse too; a copy would lose the update.
            raise ValueError("cannot train a model whose parameter arrays are read-only")
        # Shared memory: in-place optimizer updates write the model's arrays directly.
        weights = [torch.nn.Parameter(torch.from_numpy(w)) for w in model.weights]
        biases = [torch.nn.Parameter(torch.from_numpy(b)) for b in model.biases]
        return weights, biases

    # -- Protocol -----------------------------------------------------------------------

    def predict_proba(self, model: Model, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), N_CLASSES), dtype=model.dtype)
        weights, biases = self._params(model)
        with torch.inference_mode():
            for s in range(0, len(images), _PREDICT_CHUNK):
                x = _tensor(scale_images(images[s : s + _PREDICT_CHUNK], model.dtype))
                logits = _pre_activations(weights, biases, x)[-1]
                out[s : s + _PREDICT_CHUNK] = F.softmax(logits, dim=1)
        return out

    def forward(self, model: Model, images: np.ndarray) -> list[np.ndarray]:
        weights, biases = self._params(model)
        x = _tensor(scale_images(images, model.dtype))
        with torch.inference_mode():
            zs = _pre_activations(weights, biases, x)
            acts = [x, *(F.relu(z) for z in zs[:-1]), F.softmax(zs[-1], dim=1)]
        return [a.numpy() for a in acts]

    def gradients(self, model: Model, images: np.ndarray, labels: np.ndarray) -> Gradients:
        weights, biases = self._params(model, requires_grad=True)
        x = _tensor(scale_images(images, model.dtype))
        y = _tensor(np.asarray(labels, dtype=np.int64))
        logits = _pre_activations(weights, biases, x)[-1]
        loss = F.cross_entropy(logits, y)
        loss.backward()
        with torch.no_grad():
            probs = F.softmax(logits, dim=1).numpy()
        return Gradients(
            float(loss.item()),
            probs,
            [w.grad.numpy() for w in weights],
            [b.grad.numpy() for b in biases],
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
        x_all = self._data(images, model.dtype)
        y_all = self._targets(labels)
        return self._epoch(model, optimizer, x_all, y_all, order, batch_size, lrs)

    def _epoch(
        self,
        model: Model,
        optimizer: SGD,
        x_all: torch.Tensor,
        y_all: torch.Tensor,
        order: np.ndarray,
        batch_size: int,
        lrs: np.ndarray,
    ) -> EpochResult:
        optimizer.init_state(model.weights, model.biases)
        weights, biases = self._trainable(model)
        opt = torch.optim.SGD(
            [
                {"params": weights, "weight_decay": optimizer.weight_decay},
                {"params": biases, "weight_decay": 0.0},
            ],
            lr=float(lrs[0]) if len(lrs) else 0.0,
            momentum=optimizer.momentum,
            nesterov=optimizer.nesterov,
        )
        buffers = [
            *zip(weights, optimizer.velocity_w, strict=True),
            *zip(biases, optimizer.velocity_b, strict=True),
        ]
        if optimizer.momentum:
            # Seeding the buffers (rather than letting the first step clone the grad)
            # makes epoch k+1 continue the velocity of epoch k, as the reference does.
            for p, v in buffers:
                opt.state[p]["momentum_buffer"] = torch.from_numpy(v)

        order_t = _tensor(np.asarray(order, dtype=np.int64))
        # Accumulated as tensors so the loop never waits on .item().
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for step, start in enumerate(range(0, len(order_t), batch_size)):
            idx = order_t[start : start + batch_size]
            x, y = x_all[idx], y_all[idx]
            logits = _pre_activations(weights, biases, x)[-1]
            per_sample = F.cross_entropy(logits, y, reduction="none")
            loss = per_sample.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lr = float(lrs[step])
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            with torch.no_grad():
                loss_sum += per_sample.sum(dtype=torch.float64)
                correct += (logits.argmax(dim=1) == y).sum()

        if optimizer.momentum:
            # SGD updates the seeded buffers in place; copy only if it ever replaced them.
            for p, v in buffers:
                buf = opt.state[p]["momentum_buffer"]
                if buf.data_ptr() != v.ctypes.data:
                    v[...] = buf.numpy()
        return EpochResult(float(loss_sum.item()), int(correct.item()), len(order))

    def warmup(
        self, model: Model, optimizer: SGD, batch_size: int, n_samples: int | None = None,
        options: EpochOptions | None = None,
    ) -> None:
        """Run one throwaway step on copies, so lazy kernel set-up is not timed."""
        self._require_plain_sgd(optimizer, options)
        scratch = model.copy()
        opt = SGD(optimizer.momentum, optimizer.nesterov, optimizer.weight_decay)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(batch_size, N_PIXELS), dtype=np.uint8)
        x = torch.from_numpy(scale_images(images, model.dtype))
        y = torch.arange(batch_size, dtype=torch.int64) % N_CLASSES
        # Straight to _epoch: a dummy batch must not take a slot in the data cache.
        self._epoch(scratch, opt, x, y, np.arange(batch_size), batch_size, np.zeros(1))

    def limit_threads(self, threads: int | None) -> contextlib.AbstractContextManager[None]:
        """Set ``torch.set_num_threads(threads)`` inside the context, then restore it."""
        return scoped_threads(torch.get_num_threads, torch.set_num_threads, threads)
