"""Callbacks that schedule and record training."""

from kerasllm.callbacks.checkpoint import Checkpoint, CheckpointError
from kerasllm.callbacks.non_finite_guard import NonFiniteGuard
from kerasllm.callbacks.training_logger import TrainingLogger
from kerasllm.callbacks.distillation import Distillation
from kerasllm.callbacks.quantization_aware_training import QuantizationAwareTraining

__all__ = ["Checkpoint", "CheckpointError", "NonFiniteGuard", "TrainingLogger", "Distillation"]
__all__ += ["QuantizationAwareTraining"]
from kerasllm.callbacks.pruning import Pruning

__all__ += ["Pruning"]
from kerasllm.callbacks.elastic_weight_consolidation import ElasticWeightConsolidation

__all__ += ["ElasticWeightConsolidation"]
