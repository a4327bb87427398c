import keras

from kerasllm.layers.feed_forward import FeedForward
from kerasllm.layers.normalization import normalization_layer
from kerasllm.layers.self_attention import SelfAttention


@keras.saving.register_keras_serializable(package="kerasllm")
class DecoderBlock(keras.layers.Layer):
    """Pre-norm Transformer decoder block: causal self-attention and a feed-forward network.

    `x = x + dropout(attention(norm(x)))`, then `x = x + dropout(feedforward(norm(x)))`, as in GPT-2
    and Llama. Sublayers are named `attention_norm`, `attention`, `feedforward_norm`, `feedforward`
    (variable paths are API: layout maps, LoRA, QAT and pruning match on them).

    Args:
        hidden_dim: int. Width of the residual stream.
        num_heads: int. Query heads.
        intermediate_dim: int. Inner width of the feed-forward network.
        num_key_value_heads: int. Key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: int. Width of each head. Defaults to `hidden_dim // num_heads`.
        activation: str. `"gelu"`, `"relu"` or `"swiglu"`. Defaults to `"gelu"`.
        normalization: str. `"layernorm"` or `"rmsnorm"`. Defaults to `"layernorm"`.
        use_rotary: bool. Rotary position embedding in attention. Defaults to `False`.
        rope_max_wavelength: float. RoPE base. Defaults to `10000`.
        use_bias: bool. Biases in the projections. Defaults to `True`.
        dropout: float. Residual dropout. Defaults to `0`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        kernel_initializer: initializer. Defaults to normal(0.02).
        output_initializer: initializer of the two projections that write into the residual stream.
            Defaults to `kernel_initializer`.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: tensor `(B, T, C)`.
        padding_mask: optional `(B, T)` (or `(B, S)` with a cache), true for real tokens.
        cache: optional `(B, 2, S, K, H)` key/value cache of this block.
        cache_index: int or scalar tensor, position of the first input token when using a cache.
        training: bool.

    Returns:
        `(B, T, C)`, or `(output, updated_cache)` when `cache` is given.

    Example:

    >>> block = kerasllm.layers.DecoderBlock(hidden_dim=16, num_heads=4, intermediate_dim=64)
    >>> block(keras.random.normal((2, 5, 16))).shape
    (2, 5, 16)
    """

    causal = True

    def __init__(
        self,
        hidden_dim,
        num_heads,
        intermediate_dim,
        num_key_value_heads=None,
        head_dim=None,
        activation="gelu",
        normalization="layernorm",
        use_rotary=False,
        rope_max_wavelength=10000.0,
        use_bias=True,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        kernel_initializer=None,
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_key_value_heads = num_key_value_heads or num_heads
        self.head_dim = head_dim
        self.activation = activation
        self.normalization = normalization
        self.use_rotary = use_rotary
        self.rope_max_wavelength = rope_max_wavelength
        self.use_bias = use_bias
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.02)
        )
        self.output_initializer = keras.initializers.get(output_initializer or self.kernel_initializer)

        self.attention_norm = normalization_layer(
            normalization, layer_norm_epsilon, "attention_norm", self.dtype_policy
        )
        self.attention = SelfAttention(
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=head_dim,
            causal=self.causal,
            use_rotary=use_rotary,
            rope_max_wavelength=rope_max_wavelength,
            use_bias=use_bias,
            dropout=dropout,
            kernel_initializer=self.kernel_initializer,
            output_initializer=self.output_initializer,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.feedforward_norm = normalization_layer(
            normalization, layer_norm_epsilon, "feedforward_norm", self.dtype_policy
        )
        self.feedforward = FeedForward(
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            output_initializer=self.output_initializer,
            dtype=self.dtype_policy,
            name="feedforward",
        )
        self.feedforward_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="feedforward_dropout")

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.feedforward_norm.build(input_shape)
        self.feedforward.build(input_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, cache=None, cache_index=0, training=None):
        attended = self.attention(
            self.attention_norm(inputs),
            padding_mask=padding_mask,
            cache=cache,
            cache_index=cache_index,
            training=training,
        )
        if cache is not None:
            attended, cache = attended
        x = inputs + attended
        x = x + self.feedforward_dropout(self.feedforward(self.feedforward_norm(x)), training=training)
        if cache is not None:
            return x, cache
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "activation": self.activation,
                "normalization": self.normalization,
                "use_rotary": self.use_rotary,
                "rope_max_wavelength": self.rope_max_wavelength,
                "use_bias": self.use_bias,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
