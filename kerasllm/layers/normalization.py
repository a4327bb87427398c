"""Normalization layers: Keras's own LayerNormalization and RMSNormalization, chosen by name."""

import keras

LayerNormalization = keras.layers.LayerNormalization
RMSNormalization = keras.layers.RMSNormalization

NORMALIZATIONS = ("layernorm", "rmsnorm")


def normalization_layer(kind, epsilon, name, dtype=None):
    """Returns a fresh normalization layer of `kind` (`"layernorm"` or `"rmsnorm"`)."""
    if kind == "layernorm":
        return LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)
    if kind == "rmsnorm":
        return RMSNormalization(epsilon=epsilon, name=name, dtype=dtype)
    raise ValueError(f"Unknown normalization {kind!r}; use one of {NORMALIZATIONS}.")
