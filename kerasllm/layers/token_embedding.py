import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasllm")
class TokenEmbedding(keras.layers.Embedding):
    """Token embedding whose table can also serve as the output head (tied weights).

    A `keras.layers.Embedding` (so LoRA and Keras quantization apply to it) with one extra mode:
    `reverse=True` maps hidden states back to vocabulary logits with the transposed table, as GPT-2
    and most small language models do to save `vocabulary_size * hidden_dim` parameters.

    Args:
        vocabulary_size: int. Number of token ids.
        hidden_dim: int. Width of each embedding vector.
        embeddings_initializer: initializer. Defaults to a normal with standard deviation 0.02.
        **kwargs: forwarded to `keras.layers.Embedding` (e.g. `name`, `dtype`).

    Call arguments:
        inputs: int tensor of token ids `(B, T)`, or with `reverse=True` hidden states `(B, T, C)`.
        reverse: bool. Compute logits from hidden states instead of looking up ids. Defaults to `False`.

    Example:

    >>> layer = kerasllm.layers.TokenEmbedding(vocabulary_size=10, hidden_dim=4)
    >>> hidden = layer(keras.ops.ones((2, 3), "int32"))        # (2, 3, 4)
    >>> logits = layer(hidden, reverse=True)                   # (2, 3, 10)
    """

    def __init__(self, vocabulary_size, hidden_dim, embeddings_initializer=None, **kwargs):
        kwargs.pop("input_dim", None)
        kwargs.pop("output_dim", None)
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomNormal(stddev=0.02)
        super().__init__(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            embeddings_initializer=embeddings_initializer,
            **kwargs,
        )
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        table = ops.cast(self.embeddings, self.compute_dtype)
        # (B, T, C) x (V, C)^T -> (B, T, V)
        return ops.matmul(inputs, ops.transpose(table))

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.vocabulary_size,)
        return super().compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("input_dim", None)
        config.pop("output_dim", None)
        config.update({"vocabulary_size": self.vocabulary_size, "hidden_dim": self.hidden_dim})
        return config
