"""Training: settings, optimizers' schedules, the trainer and its history."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .history import History
from .presets import PRESETS, preset_settings
from .schedules import SCHEDULES, make_schedule
from .trainer import Trainer, evaluate, train

__all__ = [
    "SCHEDULES",
    "History",
    "PRESETS",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "make_schedule",
    "preset_settings",
    "save_checkpoint",
    "train",
]
