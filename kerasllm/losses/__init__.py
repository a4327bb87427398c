"""Losses for language models: token cross-entropy with ignored positions, and distillation."""

from kerasllm.losses import distillation
from kerasllm.losses import feature_distillation
from kerasllm.losses.causal_lm_loss import CausalLMLoss
from kerasllm.losses.distillation_loss import DistillationLoss
from kerasllm.losses.masked_lm_loss import MaskedLMLoss
from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX
from kerasllm.losses.sparse_cross_entropy import sparse_cross_entropy

__all__ = [
    "IGNORE_INDEX",
    "CausalLMLoss",
    "MaskedLMLoss",
    "sparse_cross_entropy",
    "DistillationLoss",
    "distillation",
    "feature_distillation",
]
