"""Utilities: safe model loading and crash-safe file writes."""

from kerasllm.utils.model_loading import load_model

__all__ = ["load_model"]
