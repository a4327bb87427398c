import keras
from keras import ops

from kerasllm.layers.normalization import normalization_layer
from kerasllm.layers.rotary_embedding import RotaryEmbedding
from kerasllm.utils import backend_compile


@keras.saving.register_keras_serializable(package="kerasllm")
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention with grouped-query heads, masks and a key/value cache.

    Attention itself runs through `keras.ops.dot_product_attention`, so each backend uses its fused
    kernel where it has one (cuDNN flash attention on JAX/GPU, PyTorch SDPA). Grouped-query attention
    (`num_key_value_heads < num_heads`) is passed to that op as is: no key/value copies are made here.

    Args:
        num_heads: int. Number of query heads.
        hidden_dim: int. Width of the input and output.
        num_key_value_heads: int. Number of key/value heads; must divide `num_heads`. Defaults to
            `num_heads` (plain multi-head attention). `1` gives multi-query attention.
        head_dim: int. Width of each head. Defaults to `hidden_dim // num_heads`.
        causal: bool. Whether a token may only attend to itself and earlier tokens. Defaults to `True`.
        use_rotary: bool. Apply rotary position embedding to queries and keys. Defaults to `False`.
        rope_max_wavelength: float. RoPE base. Defaults to `10000`.
        rope_scaling: dict. RoPE context scaling (see `kerasllm.layers.RotaryEmbedding`). Defaults
            to `None`.
        use_bias: bool. Whether the projections have biases. Defaults to `True`.
        qkv_bias: bool. Whether the query, key and value projections have biases (Qwen2: yes, while
            the output projection has none). Defaults to `use_bias`.
        qk_norm: str. Normalize each head of the queries and keys before RoPE with this kind of
            normalization (`"rmsnorm"` as Qwen3, `"rmsnorm_plus_one"` as Gemma 3); sublayers
            `query_norm` and `key_norm`. Defaults to `None` (no normalization).
        qk_norm_epsilon: float. Epsilon of those norms. Defaults to `1e-6`.
        sliding_window: int. Each query attends to itself and the `sliding_window - 1` keys before
            it only (Mistral, Gemma 3 local layers). Defaults to `None` (no window).
        query_pre_attn_scalar: float. Attention scores are scaled by `query_pre_attn_scalar ** -0.5`
            instead of `head_dim ** -0.5` (Gemma). Defaults to `None`.
        dropout: float. Dropout on the output projection. Defaults to `0`.
        kernel_initializer: initializer for query/key/value. Defaults to normal(0.02).
        output_initializer: initializer for the output projection. Defaults to `kernel_initializer`.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: tensor `(B, T, C)`.
        padding_mask: optional bool/int tensor `(B, T)` (`(B, S)` with a cache), true for real tokens.
        cache: optional tensor `(B, 2, S, K, H)` of keys and values for positions `< S`, or a pair
            `(keys, values)` of tensors `(B, S, K, H)` (what compiled decoding uses: updating them
            needs no slicing of a stacked tensor).
        cache_index: int or scalar tensor. Position of `inputs[:, 0]` when a cache is given.
        training: bool. Dropout is active when true.

    Returns:
        The output `(B, T, C)`, or `(output, updated_cache)` when `cache` is given.

    Example:

    >>> attention = kerasllm.layers.SelfAttention(num_heads=4, hidden_dim=16, num_key_value_heads=2)
    >>> attention(keras.random.normal((2, 5, 16))).shape
    (2, 5, 16)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Ainslie et al., 2023 (GQA)](https://arxiv.org/abs/2305.13245)
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        num_key_value_heads=None,
        head_dim=None,
        causal=True,
        use_rotary=False,
        rope_max_wavelength=10000.0,
        rope_scaling=None,
        use_bias=True,
        qkv_bias=None,
        qk_norm=None,
        qk_norm_epsilon=1e-6,
        sliding_window=None,
        query_pre_attn_scalar=None,
        dropout=0.0,
        kernel_initializer=None,
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if sliding_window is not None:
            if isinstance(sliding_window, bool) or not isinstance(sliding_window, int) or sliding_window < 1:
                raise ValueError(f"`sliding_window` must be a positive integer or None, got {sliding_window!r}.")
            if not causal:
                raise ValueError("`sliding_window` is only supported with causal attention (causal=True).")
        num_key_value_heads = num_key_value_heads or num_heads
        if num_heads % num_key_value_heads:
            raise ValueError(
                f"num_heads={num_heads} must be a multiple of num_key_value_heads={num_key_value_heads} "
                "(each key/value head serves the same number of query heads)."
            )
        if head_dim is None:
            if hidden_dim % num_heads:
                raise ValueError(
                    f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}; "
                    "pick another num_heads or pass head_dim explicitly."
                )
            head_dim = hidden_dim // num_heads
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.causal = causal
        self.use_rotary = use_rotary
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_scaling = rope_scaling
        self.use_bias = use_bias
        self.qkv_bias = use_bias if qkv_bias is None else qkv_bias
        self.qk_norm = qk_norm
        self.qk_norm_epsilon = qk_norm_epsilon
        self.sliding_window = sliding_window
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.02)
        )
        self.output_initializer = keras.initializers.get(output_initializer or self.kernel_initializer)

        def dense(units, name, initializer, bias):
            return keras.layers.Dense(
                units, use_bias=bias, kernel_initializer=initializer, name=name, dtype=self.dtype_policy
            )

        self.query = dense(num_heads * head_dim, "query", self.kernel_initializer, self.qkv_bias)
        self.key = dense(num_key_value_heads * head_dim, "key", self.kernel_initializer, self.qkv_bias)
        self.value = dense(num_key_value_heads * head_dim, "value", self.kernel_initializer, self.qkv_bias)
        self.output_dense = dense(hidden_dim, "output", self.output_initializer, use_bias)
        self.output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="output_dropout")
        self.rotary = (
            RotaryEmbedding(rope_max_wavelength, rope_scaling=rope_scaling, dtype=self.dtype_policy, name="rotary")
            if use_rotary
            else None
        )
        self.query_norm = self.key_norm = None
        if qk_norm is not None:
            self.query_norm = normalization_layer(qk_norm, qk_norm_epsilon, "query_norm", self.dtype_policy)
            self.key_norm = normalization_layer(qk_norm, qk_norm_epsilon, "key_norm", self.dtype_policy)

    def build(self, input_shape):
        self.query.build(input_shape)
        self.key.build(input_shape)
        self.value.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.num_heads * self.head_dim,))
        if self.query_norm is not None:
            self.query_norm.build((None, None, None, self.head_dim))
            self.key_norm.build((None, None, None, self.head_dim))
        self.built = True

    def _split_heads(self, x, heads):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, length, heads, self.head_dim))

    def call(self, inputs, padding_mask=None, cache=None, cache_index=0, training=None):
        query = self._split_heads(self.query(inputs), self.num_heads)  # (B, T, N, H)
        key = self._split_heads(self.key(inputs), self.num_key_value_heads)  # (B, T, K, H)
        value = self._split_heads(self.value(inputs), self.num_key_value_heads)  # (B, T, K, H)
        if self.query_norm is not None:
            query, key = self.query_norm(query), self.key_norm(key)
        start = cache_index if cache is not None else 0
        if self.rotary is not None:
            query = self.rotary(query, start_index=start)
            key = self.rotary(key, start_index=start)

        if isinstance(cache, (list, tuple)):  # keys and values apart: no slicing of a stacked cache per step
            keys, values = cache
            keys = backend_compile.write_positions(keys, cache_index, key)
            values = backend_compile.write_positions(values, cache_index, value)
            cache, key, value = (keys, values), keys, values  # (B, S, K, H)
            mask = self._mask(ops.shape(query)[1], ops.shape(key)[1], start, padding_mask)
            attended = self._attend(query, key, value, mask=mask)
        elif cache is not None:
            update = ops.stack([key, value], axis=1)  # (B, 2, T, K, H)
            cache = ops.slice_update(cache, (0, 0, cache_index, 0, 0), ops.cast(update, cache.dtype))
            key, value = cache[:, 0], cache[:, 1]  # (B, S, K, H)
            mask = self._mask(ops.shape(query)[1], ops.shape(key)[1], start, padding_mask)
            attended = self._attend(query, key, value, mask=mask)
        elif padding_mask is None and self.sliding_window is None:
            attended = self._attend(query, key, value, is_causal=self.causal)
        else:
            mask = self._mask(ops.shape(query)[1], ops.shape(key)[1], 0, padding_mask)
            attended = self._attend(query, key, value, mask=mask)

        batch, length = ops.shape(attended)[0], ops.shape(attended)[1]
        attended = ops.reshape(attended, (batch, length, self.num_heads * self.head_dim))
        output = self.output_dropout(self.output_dense(attended), training=training)
        if cache is not None:
            return output, cache
        return output

    def _attend(self, query, key, value, mask=None, is_causal=False):
        if self.num_key_value_heads == 1 < self.num_heads and keras.backend.backend() == "tensorflow":
            # Keras 3.15's TensorFlow attention only broadcasts key/value heads when there are two or
            # more; with one (multi-query attention) it fails, so give it one copy per query head.
            key = ops.repeat(key, self.num_heads, axis=2)
            value = ops.repeat(value, self.num_heads, axis=2)
        scale = None if self.query_pre_attn_scalar is None else float(self.query_pre_attn_scalar) ** -0.5
        return ops.dot_product_attention(query, key, value, mask=mask, scale=scale, is_causal=is_causal)

    def _mask(self, query_length, key_length, start, padding_mask):
        """Boolean mask `(B or 1, 1, T, S)`: true where query t may attend to key s."""
        query_positions = ops.arange(query_length)[:, None] + start  # (T, 1)
        key_positions = ops.arange(key_length)[None, :]  # (1, S)
        if self.causal:
            allowed = key_positions <= query_positions
            if self.sliding_window is not None:
                allowed = ops.logical_and(allowed, key_positions > query_positions - self.sliding_window)
        else:
            allowed = ops.ones((query_length, key_length), dtype="bool")
        allowed = allowed[None, None]
        if padding_mask is not None:
            keys_real = ops.cast(padding_mask, "bool")[:, None, None, :]  # (B, 1, 1, S)
            # A query always sees its own position, so a row of padding never softmaxes over nothing
            # (which gives NaN on some backends and NaN gradients through masked losses).
            itself = (key_positions == query_positions)[None, None]
            allowed = ops.logical_and(allowed, ops.logical_or(keys_real, itself))
        return allowed

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "causal": self.causal,
                "use_rotary": self.use_rotary,
                "rope_max_wavelength": self.rope_max_wavelength,
                "rope_scaling": self.rope_scaling,
                "use_bias": self.use_bias,
                "qkv_bias": self.qkv_bias,
                "qk_norm": self.qk_norm,
                "qk_norm_epsilon": self.qk_norm_epsilon,
                "sliding_window": self.sliding_window,
                "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "dropout": self.dropout,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
