"""Callbacks that schedule and record training."""

from kerasllm.callbacks.training_logger import TrainingLogger

__all__ = ["TrainingLogger"]
