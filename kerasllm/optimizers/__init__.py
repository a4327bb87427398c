"""Optimizers for language models: AdamW with gradient-norm tracking and the usual training recipe."""

from kerasllm.optimizers.adamw import AdamW
from kerasllm.optimizers.recipe import create_optimizer

__all__ = ["AdamW", "create_optimizer"]
