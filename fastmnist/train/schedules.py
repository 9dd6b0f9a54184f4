"""Learning-rate schedules: one learning rate per optimisation step.

A schedule hands the trainer a whole epoch's learning rates at once, so a fused
backend can run the epoch without calling back into Python. Every schedule can
start with a linear warm-up; the schedule proper then runs over what remains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..validation import check_learning_rate


@dataclass(frozen=True)
class Schedule:
    """Base schedule: ``shape(u)`` gives the rate at fraction ``u`` of the post-warm-up run.

    Parameters
    ----------
    lr : float
        Peak learning rate.
    epochs : int
        Length of the run.
    warmup_epochs : float
        Linear warm-up from 0 to ``lr`` over this many epochs (per step).
    """

    lr: float
    epochs: int
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        check_learning_rate(self.lr)

    def shape(self, u: float, epoch: int) -> float:
        raise NotImplementedError

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        t = epoch + step / steps_per_epoch  # epochs done, fractional
        if t < self.warmup_epochs:
            return self.lr * (t + 1.0 / steps_per_epoch) / self.warmup_epochs
        u = (t - self.warmup_epochs) / max(self.epochs - self.warmup_epochs, 1e-12)
        return self.shape(min(u, 1.0), epoch)

    def epoch_lrs(self, epoch: int, steps_per_epoch: int) -> np.ndarray:
        """Learning rates of every step of ``epoch`` (0-based), as float64."""
        return np.array(
            [self.lr_at(epoch, s, steps_per_epoch) for s in range(steps_per_epoch)],
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Constant(Schedule):
    """The same learning rate throughout."""

    def shape(self, u: float, epoch: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_epochs`` epochs (per epoch)."""

    gamma: float = 0.2
    step_epochs: int = 0  # 0: a third of the run, at least 1

    def shape(self, u: float, epoch: int) -> float:
        every = self.step_epochs or max(1, self.epochs // 3)
        return self.lr * self.gamma ** (epoch // every)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine annealing from ``lr`` to ``lr * final_fraction``, updated every step."""

    final_fraction: float = 0.0

    def shape(self, u: float, epoch: int) -> float:
        low = self.lr * self.final_fraction
        return low + 0.5 * (self.lr - low) * (1.0 + math.cos(math.pi * u))


@dataclass(frozen=True)
class OneCycle(Schedule):
    """One cycle (Smith): up from ``lr / 25`` to ``lr`` over ``rise`` of the run, then down.

    Both halves follow a cosine, as PyTorch's ``OneCycleLR`` does; the rate ends at
    ``lr / 25 / 1e4``.
    """

    rise: float = 0.3

    def shape(self, u: float, epoch: int) -> float:
        start, end = self.lr / 25.0, self.lr / 25.0 / 1e4
        if u < self.rise:
            return start + 0.5 * (self.lr - start) * (1.0 - math.cos(math.pi * u / self.rise))
        v = (u - self.rise) / (1.0 - self.rise)
        return end + 0.5 * (self.lr - end) * (1.0 + math.cos(math.pi * v))


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step": StepDecay,
    "cosine": Cosine,
    "onecycle": OneCycle,
}


def make_schedule(name: str, lr: float, epochs: int, *, warmup_epochs: float = 0.0) -> Schedule:
    """Build the schedule called ``name`` (see :data:`SCHEDULES`)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](lr=lr, epochs=epochs, warmup_epochs=warmup_epochs)
