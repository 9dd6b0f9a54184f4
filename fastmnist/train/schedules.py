"""Learning-rate schedules: one learning rate per optimisation step.

A schedule hands the trainer a whole epoch's learning rates at once, so a fused
backend can run the epoch without calling back into Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..validation import check_learning_rate


@dataclass(frozen=True)
class Schedule:
    """Base schedule: ``lr_at(t)`` for the fraction ``t`` in [0, 1) of training done."""

    lr: float
    epochs: int

    def __post_init__(self) -> None:
        check_learning_rate(self.lr)

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        raise NotImplementedError

    def epoch_lrs(self, epoch: int, steps_per_epoch: int) -> np.ndarray:
        """Learning rates of every step of ``epoch`` (0-based), as float64."""
        return np.array(
            [self.lr_at(epoch, s, steps_per_epoch) for s in range(steps_per_epoch)],
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Constant(Schedule):
    """The same learning rate throughout."""

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_epochs`` epochs (per epoch)."""

    gamma: float = 0.2
    step_epochs: int = 0  # 0: a third of the run, at least 1

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        every = self.step_epochs or max(1, self.epochs // 3)
        return self.lr * self.gamma ** (epoch // every)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine annealing from ``lr`` to ``lr * final_fraction``, updated every step."""

    final_fraction: float = 0.0

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        t = (epoch + step / steps_per_epoch) / self.epochs
        low = self.lr * self.final_fraction
        return low + 0.5 * (self.lr - low) * (1.0 + math.cos(math.pi * t))


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step": StepDecay,
    "cosine": Cosine,
}


def make_schedule(name: str, lr: float, epochs: int) -> Schedule:
    """Build the schedule called ``name`` (see :data:`SCHEDULES`)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](lr=lr, epochs=epochs)
