import keras

from kerasllm.layers.decoder_block import DecoderBlock


@keras.saving.register_keras_serializable(package="kerasllm")
class EncoderBlock(DecoderBlock):
    """Pre-norm Transformer encoder block: bidirectional self-attention and a feed-forward network.

    The same block as `kerasllm.layers.DecoderBlock` (same arguments and sublayer names) except that
    every token attends to every non-padding token, as in BERT. It has no key/value cache.

    Example:

    >>> block = kerasllm.layers.EncoderBlock(hidden_dim=16, num_heads=4, intermediate_dim=64)
    >>> mask = keras.ops.array([[1, 1, 1, 0, 0]], "bool")
    >>> block(keras.random.normal((1, 5, 16)), padding_mask=mask).shape
    (1, 5, 16)
    """

    causal = False

    def call(self, inputs, padding_mask=None, training=None):
        return super().call(inputs, padding_mask=padding_mask, training=training)
