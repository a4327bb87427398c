"""Metrics for language models: perplexity and accuracy over labelled tokens."""

from kerasllm.metrics.masked_accuracy import MaskedAccuracy
from kerasllm.metrics.perplexity import Perplexity

__all__ = ["MaskedAccuracy", "Perplexity"]
