"""Conversion of KerasHub models into kerasllm models with identical logits (`from_keras_hub`)."""

from kerasllm.models.keras_hub.convert import from_keras_hub, supported_classes

__all__ = ["from_keras_hub", "supported_classes"]
