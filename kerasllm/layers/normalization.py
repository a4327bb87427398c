"""Normalization layers, chosen by name: Keras's own LayerNormalization and RMSNormalization, and the
RMS normalization whose scale is stored as an offset from one (Gemma)."""

import keras
from keras import ops

LayerNormalization = keras.layers.LayerNormalization
RMSNormalization = keras.layers.RMSNormalization

NORMALIZATIONS = ("layernorm", "rmsnorm", "rmsnorm_plus_one")


@keras.saving.register_keras_serializable(package="kerasllm")
class RMSNormalizationPlusOne(keras.layers.Layer):
    """RMS normalization that multiplies by `1 + scale`, with `scale` initialized to zero (Gemma).

    Computes `x / sqrt(mean(x^2) + epsilon) * (1 + scale)` in float32 and casts back, as Gemma's
    reference does. Storing the offset rather than `1 + scale` keeps the scale exact in bfloat16,
    where numbers near one have only 8 bits of precision.

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.
        **kwargs: standard layer arguments.

    Example:

    >>> norm = kerasllm.layers.RMSNormalizationPlusOne()
    >>> norm(keras.ops.ones((2, 3, 8))).shape
    (2, 3, 8)
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="zeros")
        self.built = True

    def call(self, inputs):
        scale = 1.0 + ops.cast(self.scale, "float32")
        x = ops.rms_normalization(ops.cast(inputs, "float32"), scale=scale, epsilon=self.epsilon)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


def normalization_layer(kind, epsilon, name, dtype=None):
    """Returns a fresh normalization layer of `kind` (one of `NORMALIZATIONS`)."""
    if kind == "layernorm":
        return LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)
    if kind == "rmsnorm":
        return RMSNormalization(epsilon=epsilon, name=name, dtype=dtype)
    if kind == "rmsnorm_plus_one":
        return RMSNormalizationPlusOne(epsilon=epsilon, name=name, dtype=dtype)
    raise ValueError(f"Unknown normalization {kind!r}; use one of {NORMALIZATIONS}.")
