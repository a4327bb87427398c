"""Metrics for language models: perplexity and accuracy over labelled tokens."""

from kerasllm.metrics.masked_accuracy import MaskedAccuracy
from kerasllm.metrics.perplexity import Perplexity

__all__ = ["MaskedAccuracy", "Perplexity"]
from kerasllm.metrics.bleu import BLEU, bleu
from kerasllm.metrics.rouge import ROUGE, rouge_l, rouge_n

__all__ += ["BLEU", "ROUGE", "bleu", "rouge_l", "rouge_n"]
