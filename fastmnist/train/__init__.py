"""Training: settings, optimizers' schedules, the trainer and its history."""

from .config import TrainConfig
from .history import History
from .schedules import SCHEDULES, make_schedule
from .trainer import Trainer, evaluate, train

__all__ = ["SCHEDULES", "History", "TrainConfig", "Trainer", "evaluate", "make_schedule", "train"]
