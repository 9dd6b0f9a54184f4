"""Checkpoints: a model file that also holds what is needed to continue training.

A checkpoint is an ordinary model ``.npz`` (``fastmnist.load_model`` reads it) with
``extra`` arrays: the completed epoch count, the generator's state and the
optimizer's velocities. Resuming from it with the same settings ends with the same
weights as an uninterrupted run: bit-identical on the NumPy backend, and on Numba
for any thread count (its sums do not depend on it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..modelfile import load_model_and_extra, save_model
from .config import TrainConfig
from .history import History
from .trainer import Trainer


def save_checkpoint(trainer: Trainer, path: str | os.PathLike[str]) -> Path:
    """Write the trainer's model and state (last completed epoch) atomically."""
    trainer._sync_model()
    extra: dict[str, np.ndarray] = {
        "epoch": np.array(trainer.epoch),
        "rng_state": np.array(json.dumps(trainer.rng.bit_generator.state)),
    }
    extra["optimizer_step"] = np.array(trainer.optimizer.step)
    for i, a in enumerate(trainer.optimizer.state_arrays()):
        extra[f"optimizer_state{i}"] = a
    if trainer.best is not None:  # early stopping's memory, so resuming keeps it
        score, epoch, params = trainer.best
        extra["best_score"], extra["best_epoch"] = np.array(score), np.array(epoch)
        extra["bad_epochs"] = np.array(trainer.bad_epochs)
        for i, p in enumerate(params):
            extra[f"best_param{i}"] = p
    return save_model(trainer.model, path, extra=extra)


def load_checkpoint(
    path: str | os.PathLike[str], *, progress: bool = True, **overrides: Any
) -> Trainer:
    """A trainer positioned where the checkpoint at ``path`` stopped.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_checkpoint` (``fastmnist train --out``).
    progress : bool
        Show a progress bar when training continues.
    **overrides
        Settings that replace the saved ones (for example a larger ``epochs``).

    Raises
    ------
    ModelFileError
        The file is not a checkpoint, or its state does not fit its model.
    """
    model, extra = load_model_and_extra(path)
    if "epoch" not in extra or "rng_state" not in extra:
        raise ModelFileError(f"{path}: a model, but not a checkpoint (no training state)")
    saved = {k: v for k, v in model.config.items() if k in TrainConfig.__dataclass_fields__}
    try:
        config = TrainConfig(**{**saved, **overrides})
        rng_state = json.loads(str(extra["rng_state"]))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: checkpoint state is malformed ({exc})") from None
    trainer = Trainer(config, model=model, progress=progress)
    try:
        trainer.rng.bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: checkpoint generator state is malformed ({exc})") from None
    state = trainer.optimizer.state_arrays()
    for i, target in enumerate(state):
        saved_state = extra.get(f"optimizer_state{i}")
        if saved_state is None or saved_state.shape != target.shape or (
            saved_state.dtype != target.dtype
        ):
            raise ModelFileError(f"{path}: checkpoint lacks matching optimizer state {i}")
        target[...] = saved_state
    if f"optimizer_state{len(state)}" in extra or "optimizer_step" not in extra:
        raise ModelFileError(f"{path}: checkpoint optimizer state does not fit its settings")
    trainer.optimizer.step = int(extra["optimizer_step"])
    if "best_score" in extra:
        params = [extra.get(f"best_param{i}") for i in range(len(model.parameters()))]
        if any(p is None or p.shape != q.shape for p, q in zip(params, model.parameters())):
            raise ModelFileError(f"{path}: checkpoint's best-epoch weights do not fit its model")
        trainer.best = (float(extra["best_score"]), int(extra["best_epoch"]), params)
        trainer.bad_epochs = int(extra["bad_epochs"])
    trainer.epoch = int(extra["epoch"])
    trainer.history = History(model.history)
    return trainer
