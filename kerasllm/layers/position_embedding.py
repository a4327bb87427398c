import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasllm")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embedding (GPT-2 style).

    Args:
        max_sequence_length: int. Number of positions the table holds.
        hidden_dim: int. Width of each position vector.
        initializer: initializer. Defaults to a normal with standard deviation 0.01.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: tensor `(B, T, C)`; only its length is used.
        start_index: int or scalar tensor. Position of the first element (for cached decoding).
            Defaults to `0`.

    Returns:
        Position vectors of shape `(1, T, C)`, to be added to the token embeddings.

    Example:

    >>> layer = kerasllm.layers.PositionEmbedding(max_sequence_length=16, hidden_dim=4)
    >>> layer(keras.ops.zeros((2, 5, 4))).shape
    (1, 5, 4)
    """

    def __init__(self, max_sequence_length, hidden_dim, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.01)
        )

    def build(self, input_shape=None):
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.max_sequence_length, self.hidden_dim),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        table = ops.convert_to_tensor(self.position_embeddings, dtype=self.compute_dtype)
        if isinstance(start_index, int):
            rows = ops.slice(table, (start_index, 0), (length, self.hidden_dim))
        else:  # a tensor position (compiled decoding): a gather, which no backend reads back to the host
            rows = ops.take(table, ops.arange(length) + ops.cast(start_index, "int32"), axis=0)
        return ops.expand_dims(rows, 0)

    def compute_output_shape(self, input_shape):
        return (1, input_shape[1], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_sequence_length": self.max_sequence_length,
                "hidden_dim": self.hidden_dim,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
