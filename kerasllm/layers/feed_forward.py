import keras
from keras import ops

ACTIVATIONS = ("gelu", "gelu_exact", "relu", "swiglu", "geglu")
# Gated activations: `act(gate(x)) * intermediate(x)`.
GATED = {"swiglu": "silu", "geglu": "gelu"}


@keras.saving.register_keras_serializable(package="kerasllm")
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward network: GELU MLP (GPT-2, BERT), SwiGLU (Llama) or GeGLU (Gemma).

    Args:
        hidden_dim: int. Input and output width.
        intermediate_dim: int. Width of the inner layer.
        activation: str. `"gelu"` (tanh approximation, as GPT-2), `"gelu_exact"` (the erf form, as
            BERT), `"relu"`, `"swiglu"` (`silu(gate(x)) * up(x)`) or `"geglu"`
            (`gelu_tanh(gate(x)) * up(x)`, as Gemma). Defaults to `"gelu"`.
        use_bias: bool. Whether the projections have biases. Defaults to `True`.
        kernel_initializer: initializer for the input projections. Defaults to normal(0.02).
        output_initializer: initializer for the output projection. Defaults to `kernel_initializer`.
        **kwargs: standard layer arguments.

    Example:

    >>> ffn = kerasllm.layers.FeedForward(hidden_dim=8, intermediate_dim=32, activation="swiglu")
    >>> ffn(keras.ops.ones((2, 3, 8))).shape
    (2, 3, 8)

    References:
        - [Shazeer, 2020](https://arxiv.org/abs/2002.05202)
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        activation="gelu",
        use_bias=True,
        kernel_initializer=None,
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; use one of {ACTIVATIONS}.")
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.02)
        )
        self.output_initializer = keras.initializers.get(output_initializer or self.kernel_initializer)

        def dense(units, name, initializer):
            return keras.layers.Dense(
                units,
                use_bias=use_bias,
                kernel_initializer=initializer,
                name=name,
                dtype=self.dtype_policy,
            )

        if activation in GATED:
            self.gate = dense(intermediate_dim, "gate", self.kernel_initializer)
        self.intermediate = dense(intermediate_dim, "intermediate", self.kernel_initializer)
        self.output_dense = dense(hidden_dim, "output", self.output_initializer)

    def build(self, input_shape):
        if self.activation in GATED:
            self.gate.build(input_shape)
        self.intermediate.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, inputs):
        hidden = self.intermediate(inputs)
        if self.activation == "swiglu":
            hidden = ops.silu(self.gate(inputs)) * hidden
        elif self.activation == "geglu":
            hidden = ops.gelu(self.gate(inputs), approximate=True) * hidden
        elif self.activation == "gelu":
            hidden = ops.gelu(hidden, approximate=True)
        elif self.activation == "gelu_exact":
            hidden = ops.gelu(hidden, approximate=False)
        else:
            hidden = ops.relu(hidden)
        return self.output_dense(hidden)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "activation": self.activation,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
