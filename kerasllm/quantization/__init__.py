"""Quantization (post-training and quantization-aware), pruning and low-rank compression."""

__all__ = []
