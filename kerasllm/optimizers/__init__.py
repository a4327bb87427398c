"""Optimizers for language models: AdamW with gradient-norm tracking and the usual training recipe."""

from kerasllm.optimizers.adamw import AdamW
from kerasllm.optimizers.layer_decay import layer_decay_multipliers, scale_learning_rates
from kerasllm.optimizers.recipe import create_optimizer
from kerasllm.optimizers.schedules import WarmupCosineDecay

__all__ = ["AdamW", "WarmupCosineDecay", "create_optimizer", "layer_decay_multipliers", "scale_learning_rates"]
