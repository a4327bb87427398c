"""Language models and task models, each a `keras.Model` that trains with `fit()`."""

from kerasllm.models.causal_lm import CausalLM
from kerasllm.models.masked_lm import MaskedLM
from kerasllm.models.sequence_classifier import SequenceClassifier
from kerasllm.models.transformer_backbone import TransformerBackbone

__all__ = ["CausalLM", "MaskedLM", "SequenceClassifier", "TransformerBackbone"]
