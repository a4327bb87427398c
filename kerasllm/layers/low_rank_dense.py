import keras


@keras.saving.register_keras_serializable(package="kerasllm")
class LowRankDense(keras.layers.Layer):
    """A `Dense` layer whose `(in, out)` kernel is the product of two thin factors `(in, r) @ (r, out)`.

    Computes `up(down(x))` with `down` a bias-free `keras.layers.Dense(rank)` and `up` a
    `keras.layers.Dense(units)`: `r * (in + out)` weights instead of `in * out`. Both factors are plain
    `Dense` layers, so they train with `fit`, and pruning or quantization-aware training can act on
    them. `kerasllm.quantization.factorize` creates these from a truncated SVD of trained kernels.

    Args:
        units: int. Output width.
        rank: int. Inner width `r`.
        use_bias: bool. Whether `up` has a bias. Defaults to `True`.
        kernel_initializer: initializer of both factors. Defaults to `"glorot_uniform"`.
        **kwargs: standard layer arguments.

    Example:

    >>> layer = kerasllm.layers.LowRankDense(units=32, rank=4)
    >>> layer(keras.ops.ones((2, 3, 16))).shape
    (2, 3, 32)
    """

    def __init__(self, units, rank, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        for name, value in (("units", units), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, but got {value!r}.")
        self.units = units
        self.rank = rank
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.down = keras.layers.Dense(
            rank, use_bias=False, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="down"
        )
        self.up = keras.layers.Dense(
            units, use_bias=use_bias, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name="up"
        )

    def build(self, input_shape):
        self.down.build(input_shape)
        self.up.build(tuple(input_shape[:-1]) + (self.rank,))
        self.built = True

    def call(self, inputs):
        return self.up(self.down(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "rank": self.rank,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
