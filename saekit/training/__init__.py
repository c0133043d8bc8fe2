"""Training SAEs: the trainer, its config, and the pieces of the recipe (schedules, resampling, tracking)."""

from saekit.training.config import TrainConfig
from saekit.training.sweep import train_many
from saekit.training.trainer import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "train_many"]
