import math

import keras
import numpy as np
from keras import ops

from kerasllm.layers.decoder_block import DecoderBlock
from kerasllm.layers.encoder_block import EncoderBlock
from kerasllm.layers.normalization import normalization_layer
from kerasllm.layers.position_embedding import PositionEmbedding
from kerasllm.layers.token_embedding import TokenEmbedding
from kerasllm.models.prompt_tuning import SoftPrompt

POSITION_EMBEDDINGS = ("learned", "rotary")
LAYER_TYPES = ("full_attention", "sliding_attention")


@keras.saving.register_keras_serializable(package="kerasllm")
class TransformerBackbone(keras.layers.Layer):
    """The shared trunk of every kerasllm model: embeddings, a stack of blocks, a final norm.

    One config covers GPT-2 style (learned positions, LayerNorm, GELU, biases) and Llama style
    (rotary positions, RMSNorm, SwiGLU, grouped-query attention, no biases), and the quirks of the
    families kerasllm loads from Hugging Face checkpoints as options named after their config fields:
    Mistral's sliding window, Llama 3's RoPE scaling, Qwen2's query/key/value biases, Qwen3's q/k
    norms, Gemma 3's scaled embeddings, `1 + w` RMS norms, sandwich norms, local/global layers with
    their own RoPE bases and query scaling, BERT's post-norm blocks, segment embeddings and
    embedding norm. `causal=True` stacks `DecoderBlock`s (for `CausalLM`), `causal=False` stacks
    `EncoderBlock`s (for `MaskedLM`).

    Sublayers: `token_embedding`, `position_embedding` (learned positions only), `segment_embedding`
    (with `num_segments`), `embedding_norm` (with `embedding_norm=True`), `embedding_dropout`,
    `block_0 ... block_{L-1}`, `final_norm` (pre-norm blocks only).

    Args:
        vocabulary_size: int. Number of token ids.
        num_layers: int. Number of Transformer blocks.
        num_heads: int. Query heads per block.
        hidden_dim: int. Width of the residual stream.
        intermediate_dim: int. Inner width of the feed-forward networks.
        max_sequence_length: int. Longest sequence the model accepts. Defaults to `1024`.
        num_key_value_heads: int. Key/value heads (grouped-query attention). Defaults to `num_heads`.
        head_dim: int. Width of each head. Defaults to `hidden_dim // num_heads`.
        position_embedding: str. `"learned"` or `"rotary"`. Defaults to `"learned"`.
        normalization: str. `"layernorm"`, `"rmsnorm"` or `"rmsnorm_plus_one"` (scale stored as an
            offset from one, Gemma). Defaults to `"layernorm"`.
        activation: str. `"gelu"` (tanh form), `"gelu_exact"`, `"relu"`, `"swiglu"` or `"geglu"`.
            Defaults to `"gelu"`.
        use_bias: bool. Biases in the projections. Defaults to `True`.
        qkv_bias: bool. Biases in the query, key and value projections only. Defaults to `use_bias`.
        mlp_bias: bool. Biases in the feed-forward projections. Defaults to `use_bias`.
        dropout: float. Embedding and residual dropout. Defaults to `0`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        rope_max_wavelength: float. RoPE base (`rope_theta`). Defaults to `10000`.
        rope_scaling: dict. RoPE context scaling, Hugging Face style (`rope_type` `"linear"`,
            `"llama3"` or `"yarn"` and its fields; see `kerasllm.layers.RotaryEmbedding`). Defaults to
            `None`.
        sliding_window: int. Window of the sliding-attention layers. Defaults to `None`.
        layer_types: list of str. `"full_attention"` or `"sliding_attention"` per block. Defaults to
            `None`: every block sliding when `sliding_window` is set, else every block full.
        sliding_rope_max_wavelength: float. RoPE base of the sliding layers (Gemma 3's local base);
            when set, those layers use it with `sliding_rope_scaling`. Defaults to `None` (sliding
            layers use `rope_max_wavelength` and `rope_scaling`).
        sliding_rope_scaling: dict. RoPE scaling of the sliding layers when
            `sliding_rope_max_wavelength` is set. Defaults to `None`.
        qk_norm: bool. Normalize queries and keys per head before RoPE. Defaults to `False`.
        qk_norm_epsilon: float. Epsilon of those norms. Defaults to `layer_norm_epsilon`.
        query_pre_attn_scalar: float. Scale attention scores by `query_pre_attn_scalar ** -0.5`.
            Defaults to `None` (`head_dim ** -0.5`).
        embedding_scale: float. Multiply the token embeddings by this (Gemma: `sqrt(hidden_dim)`).
            Defaults to `None`.
        normalize_first: bool. Pre-norm blocks and a final norm (`True`), or post-norm blocks and no
            final norm (`False`, BERT). Defaults to `True`.
        sandwich_norm: bool. Also normalize each block branch's output. Defaults to `False`.
        num_segments: int. Learned segment (token type) embeddings added to the input (BERT);
            inputs may then carry `segment_ids`. Defaults to `0` (none).
        embedding_norm: bool. Normalize the summed embeddings (BERT). Defaults to `False`.
        remat: bool. Recompute each block's activations in the backward pass instead of keeping
            them (gradient checkpointing through `keras.remat`): less memory for long sequences,
            about one more forward pass of compute; needs `dropout=0`. Defaults to `False`.
        causal: bool. Decoder (causal) or encoder (bidirectional) blocks. Defaults to `True`.
        num_virtual_tokens: int. Length of a trainable soft prompt (sublayer `soft_prompt`) prepended
            to every input; `0` for none. The prompt takes positions `0 ... P-1`, the hidden states
            returned are those of the real tokens only, and a cache holds `P` extra positions (see
            `kerasllm.models.prompt_tuning`). Defaults to `0`.
        **kwargs: standard layer arguments.
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=1024,
        num_key_value_heads=None,
        head_dim=None,
        position_embedding="learned",
        normalization="layernorm",
        activation="gelu",
        use_bias=True,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        rope_max_wavelength=10000.0,
        causal=True,
        num_virtual_tokens=0,
        remat=False,
        qkv_bias=None,
        mlp_bias=None,
        rope_scaling=None,
        sliding_window=None,
        layer_types=None,
        sliding_rope_max_wavelength=None,
        sliding_rope_scaling=None,
        qk_norm=False,
        qk_norm_epsilon=None,
        query_pre_attn_scalar=None,
        embedding_scale=None,
        normalize_first=True,
        sandwich_norm=False,
        num_segments=0,
        embedding_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(remat, bool):
            raise ValueError(f"`remat` must be True or False, got {remat!r}.")
        if remat and dropout:
            # The recomputed forward would draw new dropout masks (TensorFlow) or leak the random state
            # out of the checkpointed function (JAX).
            raise ValueError(
                f"`remat=True` cannot be combined with dropout={dropout}: the recomputed activations would "
                "use different dropout masks. Set dropout=0 (usual for language-model pre-training) or "
                "remat=False."
            )
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"Unknown position_embedding {position_embedding!r}; use one of {POSITION_EMBEDDINGS}."
            )
        for name, value in (
            ("vocabulary_size", vocabulary_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("hidden_dim", hidden_dim),
            ("intermediate_dim", intermediate_dim),
            ("max_sequence_length", max_sequence_length),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if head_dim is None and hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}; pick another "
                "num_heads or pass head_dim explicitly."
            )
        block_types = resolved_layer_types(layer_types, num_layers, sliding_window)
        if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 0:
            raise ValueError(f"`num_segments` must be a non-negative integer, got {num_segments!r}.")
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.num_key_value_heads = num_key_value_heads or num_heads
        self.head_dim = head_dim or hidden_dim // num_heads
        self.position_embedding_type = position_embedding
        self.normalization = normalization
        self.activation = activation
        self.use_bias = use_bias
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rope_max_wavelength = rope_max_wavelength
        self.causal = causal
        self.num_virtual_tokens = num_virtual_tokens
        self.remat = remat
        self.qkv_bias = use_bias if qkv_bias is None else qkv_bias
        self.mlp_bias = use_bias if mlp_bias is None else mlp_bias
        self.rope_scaling = rope_scaling
        self.sliding_window = sliding_window
        # As given (None: the default pattern), so a config with another num_layers stays valid.
        self.layer_types = None if layer_types is None else list(layer_types)
        self.sliding_rope_max_wavelength = sliding_rope_max_wavelength
        self.sliding_rope_scaling = sliding_rope_scaling
        self.qk_norm = qk_norm
        self.qk_norm_epsilon = layer_norm_epsilon if qk_norm_epsilon is None else qk_norm_epsilon
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.embedding_scale = embedding_scale
        self.normalize_first = normalize_first
        self.sandwich_norm = sandwich_norm
        self.num_segments = num_segments
        self.embedding_norm = embedding_norm

        # === Layers ===
        initializer = keras.initializers.RandomNormal(stddev=0.02)
        # GPT-2: projections into the residual stream are scaled by 1/sqrt(2L) so its variance stays
        # constant with depth.
        residual_initializer = keras.initializers.RandomNormal(stddev=0.02 / math.sqrt(2 * num_layers))
        self.token_embedding = TokenEmbedding(
            vocabulary_size, hidden_dim, dtype=self.dtype_policy, name="token_embedding"
        )
        self.position_embedding = None
        if position_embedding == "learned":
            self.position_embedding = PositionEmbedding(
                max_sequence_length, hidden_dim, dtype=self.dtype_policy, name="position_embedding"
            )
        self.segment_embedding = None
        if num_segments:
            self.segment_embedding = keras.layers.Embedding(
                num_segments, hidden_dim, embeddings_initializer=initializer, dtype=self.dtype_policy,
                name="segment_embedding",
            )
        self.embedding_norm_layer = None
        if embedding_norm:
            self.embedding_norm_layer = normalization_layer(
                normalization, layer_norm_epsilon, "embedding_norm", self.dtype_policy
            )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="embedding_dropout")
        block_class = DecoderBlock if causal else EncoderBlock
        self.blocks = []
        for i, layer_type in enumerate(block_types):
            sliding = layer_type == "sliding_attention"
            own_rope = sliding and sliding_rope_max_wavelength is not None
            self.blocks.append(
                block_class(
                    hidden_dim=hidden_dim,
                    num_heads=num_heads,
                    intermediate_dim=intermediate_dim,
                    num_key_value_heads=self.num_key_value_heads,
                    head_dim=self.head_dim,
                    activation=activation,
                    normalization=normalization,
                    use_rotary=position_embedding == "rotary",
                    rope_max_wavelength=sliding_rope_max_wavelength if own_rope else rope_max_wavelength,
                    rope_scaling=sliding_rope_scaling if own_rope else rope_scaling,
                    use_bias=use_bias,
                    qkv_bias=self.qkv_bias,
                    mlp_bias=self.mlp_bias,
                    qk_norm=qk_norm,
                    qk_norm_epsilon=self.qk_norm_epsilon,
                    sliding_window=sliding_window if sliding else None,
                    query_pre_attn_scalar=query_pre_attn_scalar,
                    normalize_first=normalize_first,
                    sandwich_norm=sandwich_norm,
                    dropout=dropout,
                    layer_norm_epsilon=layer_norm_epsilon,
                    kernel_initializer=initializer,
                    output_initializer=residual_initializer,
                    dtype=self.dtype_policy,
                    name=f"block_{i}",
                )
            )
        self.final_norm = None
        if normalize_first:
            self.final_norm = normalization_layer(normalization, layer_norm_epsilon, "final_norm", self.dtype_policy)
        self.soft_prompt = None
        if num_virtual_tokens:
            self.soft_prompt = SoftPrompt(num_virtual_tokens, hidden_dim, dtype=self.dtype_policy, name="soft_prompt")

    def build(self, input_shape=None):
        self.token_embedding.build((None, None))
        if self.position_embedding is not None:
            self.position_embedding.build((None, None, self.hidden_dim))
        if self.segment_embedding is not None:
            self.segment_embedding.build((None, None))
        if self.embedding_norm_layer is not None:
            self.embedding_norm_layer.build((None, None, self.hidden_dim))
        for block in self.blocks:
            block.build((None, None, self.hidden_dim))
        if self.final_norm is not None:
            self.final_norm.build((None, None, self.hidden_dim))
        if self.soft_prompt is not None:
            self.soft_prompt.build()
        self.built = True

    def add_soft_prompt(self, num_virtual_tokens, initializer=None):
        """Adds a `soft_prompt` sublayer to a built backbone (used by `enable_prompt_tuning`)."""
        if self.soft_prompt is not None:
            raise ValueError("This backbone already has a soft prompt.")
        self._tracker.unlock()
        self.soft_prompt = SoftPrompt(
            num_virtual_tokens, self.hidden_dim, initializer=initializer, dtype=self.dtype_policy, name="soft_prompt"
        )
        self.soft_prompt.build()
        self._tracker.lock()
        self.num_virtual_tokens = num_virtual_tokens

    def call(self, token_ids, padding_mask=None, cache=None, cache_index=0, training=None, segment_ids=None):
        """Returns hidden states `(B, T, C)`, or `(hidden, cache)` with a cache `(B, L, 2, S, K, H)`.

        With a soft prompt of `P` virtual tokens, `cache_index` counts real tokens: the call with the
        Python int `cache_index=0` writes the prompt to cache positions `0 ... P-1`, and later calls
        write real token `i` to cache position `P + i`. `segment_ids` `(B, T)` (models with
        `num_segments`) default to zeros.
        """
        x = self.token_embedding(token_ids)  # (B, T, C)
        if self.embedding_scale is not None:
            x = x * ops.cast(self.embedding_scale, x.dtype)
        if self.segment_embedding is not None:
            if segment_ids is None:
                segment_ids = ops.zeros(ops.shape(token_ids), dtype="int32")
            x = x + self.segment_embedding(segment_ids)  # (token + segment) + position, as BERT sums them
        prefix = self.num_virtual_tokens
        prepend = prefix > 0 and (
            cache is None or (isinstance(cache_index, (int, np.integer)) and int(cache_index) == 0)
        )
        if prepend:
            x = ops.concatenate([self.soft_prompt(x), x], axis=1)  # (B, P + T, C)
            if padding_mask is not None and cache is None:
                virtual = ops.ones((ops.shape(x)[0], prefix), dtype="bool")  # the prompt is never padding
                padding_mask = ops.concatenate([virtual, ops.cast(padding_mask, "bool")], axis=1)
            start = 0
        elif cache is not None:
            start = cache_index + prefix
        else:
            start = 0
        if self.position_embedding is not None:
            x = x + self.position_embedding(x, start_index=start)
        if self.embedding_norm_layer is not None:
            x = self.embedding_norm_layer(x)
        x = self.embedding_dropout(x, training=training)
        if cache is None:
            for block in self.blocks:
                if self.remat and training:
                    x = _rematerialized(block, padding_mask, training)(x)
                else:
                    x = block(x, padding_mask=padding_mask, training=training)
            if self.final_norm is not None:
                x = self.final_norm(x)
            return x[:, prefix:] if prepend else x
        per_layer = isinstance(cache, (list, tuple))
        caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(
                x, padding_mask=padding_mask, cache=cache[i] if per_layer else cache[:, i], cache_index=start
            )
            caches.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return (x[:, prefix:] if prepend else x), (caches if per_layer else ops.stack(caches, axis=1))

    def initial_cache(self, batch_size, length, per_layer=False):
        """An empty key/value cache `(B, L, 2, S, K, H)` in the compute dtype, for `length` real tokens.

        With a soft prompt, `S = num_virtual_tokens + length`. With `per_layer=True`, a list of `L`
        pairs `(keys, values)` of shape `(B, S, K, H)` instead (updated in place by compiled decoding,
        where a stacked cache would be copied at every step); `call` returns the cache in the form it
        was given.
        """
        shape = (batch_size, self.num_virtual_tokens + length, self.num_key_value_heads, self.head_dim)
        if per_layer:
            return [(ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype)) for _ in self.blocks]
        return ops.zeros((shape[0], self.num_layers, 2) + shape[1:], dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "position_embedding": self.position_embedding_type,
                "normalization": self.normalization,
                "activation": self.activation,
                "use_bias": self.use_bias,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "rope_max_wavelength": self.rope_max_wavelength,
                "causal": self.causal,
                "num_virtual_tokens": self.num_virtual_tokens,
                "remat": self.remat,
                "qkv_bias": self.qkv_bias,
                "mlp_bias": self.mlp_bias,
                "rope_scaling": self.rope_scaling,
                "sliding_window": self.sliding_window,
                "layer_types": self.layer_types,
                "sliding_rope_max_wavelength": self.sliding_rope_max_wavelength,
                "sliding_rope_scaling": self.sliding_rope_scaling,
                "qk_norm": self.qk_norm,
                "qk_norm_epsilon": self.qk_norm_epsilon,
                "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "embedding_scale": self.embedding_scale,
                "normalize_first": self.normalize_first,
                "sandwich_norm": self.sandwich_norm,
                "num_segments": self.num_segments,
                "embedding_norm": self.embedding_norm,
            }
        )
        return config


def resolved_layer_types(layer_types, num_layers, sliding_window):
    """The attention kind of each block (`layer_types`, or the default pattern when it is `None`),
    checked against `num_layers` and `sliding_window`."""
    if layer_types is None:
        return ["sliding_attention" if sliding_window else "full_attention"] * num_layers
    layer_types = list(layer_types)
    if len(layer_types) != num_layers:
        raise ValueError(f"`layer_types` has {len(layer_types)} entries but the model has num_layers={num_layers}.")
    unknown = sorted(set(layer_types) - set(LAYER_TYPES))
    if unknown:
        raise ValueError(f"Unknown `layer_types` {unknown}; use {LAYER_TYPES}.")
    if "sliding_attention" in layer_types and not sliding_window:
        raise ValueError("`layer_types` has 'sliding_attention' blocks but `sliding_window` is not set.")
    return layer_types


def _rematerialized(block, padding_mask, training):
    """`block` as a function of its input whose activations are recomputed in the backward pass.

    `keras.remat` (jax.checkpoint, torch.utils.checkpoint, tf.recompute_grad) traces every argument of
    the function it wraps, so the Python `training` flag and the mask are closed over instead of passed:
    `keras.RematScope` passes them as arguments and fails on JAX for layers that branch on `training`.
    """

    def call(x):
        return block(x, padding_mask=padding_mask, training=training)

    return keras.remat(call)
