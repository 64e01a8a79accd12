"""Training: the loop, its callbacks, checkpoints, metrics and run records."""

from kaon.train.api import TrainingInterrupted, TrainResult, resume, train

__all__ = ["TrainResult", "TrainingInterrupted", "resume", "train"]
