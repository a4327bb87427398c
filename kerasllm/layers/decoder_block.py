import keras

from kerasllm.layers.feed_forward import FeedForward
from kerasllm.layers.normalization import normalization_layer
from kerasllm.layers.self_attention import SelfAttention


@keras.saving.register_keras_serializable(package="kerasllm")
class DecoderBlock(keras.layers.Layer):
    """Transformer decoder block: causal self-attention and a feed-forward network.

    Pre-norm by default, `x = x + dropout(attention(norm(x)))`, then
    `x = x + dropout(feedforward(norm(x)))`, as in GPT-2 and Llama. `sandwich_norm=True` also
    normalizes each branch's output before it is added (`post_attention_norm`,
    `post_feedforward_norm`, as Gemma 2 and 3); `normalize_first=False` normalizes after each
    residual addition instead (post-norm, as BERT). Sublayers are named `attention_norm`,
    `attention`, `feedforward_norm`, `feedforward` (variable paths are API: layout maps, LoRA, QAT
    and pruning match on them).

    Args:
        hidden_dim: int. Width of the residual stream.
        num_heads: int. Query heads.
        intermediate_dim: int. Inner width of the feed-forward network.
        num_key_value_heads: int. Key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: int. Width of each head. Defaults to `hidden_dim // num_heads`.
        activation: str. `"gelu"`, `"gelu_exact"`, `"relu"`, `"swiglu"` or `"geglu"` (see
            `kerasllm.layers.FeedForward`). Defaults to `"gelu"`.
        normalization: str. `"layernorm"`, `"rmsnorm"` or `"rmsnorm_plus_one"`. Defaults to
            `"layernorm"`.
        use_rotary: bool. Rotary position embedding in attention. Defaults to `False`.
        rope_max_wavelength: float. RoPE base. Defaults to `10000`.
        rope_scaling: dict. RoPE context scaling (see `kerasllm.layers.RotaryEmbedding`). Defaults
            to `None`.
        use_bias: bool. Biases in the projections. Defaults to `True`.
        qkv_bias: bool. Biases in the query, key and value projections. Defaults to `use_bias`.
        mlp_bias: bool. Biases in the feed-forward projections. Defaults to `use_bias`.
        qk_norm: bool. Normalize queries and keys per head (Qwen3, Gemma 3). Defaults to `False`.
        qk_norm_epsilon: float. Epsilon of those norms. Defaults to `layer_norm_epsilon`.
        sliding_window: int. Local attention over this many positions. Defaults to `None`.
        query_pre_attn_scalar: float. Scores are scaled by its inverse square root instead of the
            head size's. Defaults to `None`.
        normalize_first: bool. Pre-norm (`True`) or post-norm (`False`). Defaults to `True`.
        sandwich_norm: bool. Also normalize each branch's output. Defaults to `False`.
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
        rope_scaling=None,
        use_bias=True,
        qkv_bias=None,
        mlp_bias=None,
        qk_norm=False,
        qk_norm_epsilon=None,
        sliding_window=None,
        query_pre_attn_scalar=None,
        normalize_first=True,
        sandwich_norm=False,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        kernel_initializer=None,
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if sandwich_norm and not normalize_first:
            raise ValueError("`sandwich_norm=True` needs `normalize_first=True` (it adds norms to a pre-norm block).")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_key_value_heads = num_key_value_heads or num_heads
        self.head_dim = head_dim
        self.activation = activation
        self.normalization = normalization
        self.use_rotary = use_rotary
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling = rope_scaling
        self.use_bias = use_bias
        self.qkv_bias = use_bias if qkv_bias is None else qkv_bias
        self.mlp_bias = use_bias if mlp_bias is None else mlp_bias
        self.qk_norm = qk_norm
        self.qk_norm_epsilon = layer_norm_epsilon if qk_norm_epsilon is None else qk_norm_epsilon
        self.sliding_window = sliding_window
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.normalize_first = normalize_first
        self.sandwich_norm = sandwich_norm
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
            rope_scaling=rope_scaling,
            use_bias=use_bias,
            qkv_bias=self.qkv_bias,
            qk_norm=normalization if qk_norm else None,
            qk_norm_epsilon=self.qk_norm_epsilon,
            sliding_window=sliding_window,
            query_pre_attn_scalar=query_pre_attn_scalar,
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
            use_bias=self.mlp_bias,
            kernel_initializer=self.kernel_initializer,
            output_initializer=self.output_initializer,
            dtype=self.dtype_policy,
            name="feedforward",
        )
        self.feedforward_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="feedforward_dropout")
        self.post_attention_norm = self.post_feedforward_norm = None
        if sandwich_norm:
            self.post_attention_norm = normalization_layer(
                normalization, layer_norm_epsilon, "post_attention_norm", self.dtype_policy
            )
            self.post_feedforward_norm = normalization_layer(
                normalization, layer_norm_epsilon, "post_feedforward_norm", self.dtype_policy
            )

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.feedforward_norm.build(input_shape)
        self.feedforward.build(input_shape)
        if self.sandwich_norm:
            self.post_attention_norm.build(input_shape)
            self.post_feedforward_norm.build(input_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, cache=None, cache_index=0, training=None):
        attended = self.attention(
            self.attention_norm(inputs) if self.normalize_first else inputs,
            padding_mask=padding_mask,
            cache=cache,
            cache_index=cache_index,
            training=training,
        )
        if cache is not None:
            attended, cache = attended
        if not self.normalize_first:  # post-norm (BERT)
            x = self.attention_norm(inputs + attended)
            fed = self.feedforward_dropout(self.feedforward(x), training=training)
            x = self.feedforward_norm(x + fed)
            return (x, cache) if cache is not None else x
        if self.sandwich_norm:
            attended = self.post_attention_norm(attended)
        x = inputs + attended
        fed = self.feedforward(self.feedforward_norm(x))
        if self.sandwich_norm:
            fed = self.post_feedforward_norm(fed)
        x = x + self.feedforward_dropout(fed, training=training)
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
                "rope_scaling": self.rope_scaling,
                "use_bias": self.use_bias,
                "qkv_bias": self.qkv_bias,
                "mlp_bias": self.mlp_bias,
                "qk_norm": self.qk_norm,
                "qk_norm_epsilon": self.qk_norm_epsilon,
                "sliding_window": self.sliding_window,
                "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "normalize_first": self.normalize_first,
                "sandwich_norm": self.sandwich_norm,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
