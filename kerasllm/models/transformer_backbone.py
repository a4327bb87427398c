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


@keras.saving.register_keras_serializable(package="kerasllm")
class TransformerBackbone(keras.layers.Layer):
    """The shared trunk of every kerasllm model: embeddings, a stack of blocks, a final norm.

    One config covers GPT-2 style (learned positions, LayerNorm, GELU, biases) and Llama style
    (rotary positions, RMSNorm, SwiGLU, grouped-query attention, no biases). `causal=True` stacks
    `DecoderBlock`s (for `CausalLM`), `causal=False` stacks `EncoderBlock`s (for `MaskedLM`).

    Sublayers: `token_embedding`, `position_embedding` (learned positions only), `embedding_dropout`,
    `block_0 ... block_{L-1}`, `final_norm`.

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
        normalization: str. `"layernorm"` or `"rmsnorm"`. Defaults to `"layernorm"`.
        activation: str. `"gelu"`, `"relu"` or `"swiglu"`. Defaults to `"gelu"`.
        use_bias: bool. Biases in the projections. Defaults to `True`.
        dropout: float. Embedding and residual dropout. Defaults to `0`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        rope_max_wavelength: float. RoPE base. Defaults to `10000`.
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
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="embedding_dropout")
        block_class = DecoderBlock if causal else EncoderBlock
        self.blocks = [
            block_class(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                num_key_value_heads=self.num_key_value_heads,
                head_dim=self.head_dim,
                activation=activation,
                normalization=normalization,
                use_rotary=position_embedding == "rotary",
                rope_max_wavelength=rope_max_wavelength,
                use_bias=use_bias,
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=initializer,
                output_initializer=residual_initializer,
                dtype=self.dtype_policy,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = normalization_layer(normalization, layer_norm_epsilon, "final_norm", self.dtype_policy)
        self.soft_prompt = None
        if num_virtual_tokens:
            self.soft_prompt = SoftPrompt(num_virtual_tokens, hidden_dim, dtype=self.dtype_policy, name="soft_prompt")

    def build(self, input_shape=None):
        self.token_embedding.build((None, None))
        if self.position_embedding is not None:
            self.position_embedding.build((None, None, self.hidden_dim))
        for block in self.blocks:
            block.build((None, None, self.hidden_dim))
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

    def call(self, token_ids, padding_mask=None, cache=None, cache_index=0, training=None):
        """Returns hidden states `(B, T, C)`, or `(hidden, cache)` with a cache `(B, L, 2, S, K, H)`.

        With a soft prompt of `P` virtual tokens, `cache_index` counts real tokens: the call with the
        Python int `cache_index=0` writes the prompt to cache positions `0 ... P-1`, and later calls
        write real token `i` to cache position `P + i`.
        """
        x = self.token_embedding(token_ids)  # (B, T, C)
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
        x = self.embedding_dropout(x, training=training)
        if cache is None:
            for block in self.blocks:
                if self.remat and training:
                    x = _rematerialized(block, padding_mask, training)(x)
                else:
                    x = block(x, padding_mask=padding_mask, training=training)
            x = self.final_norm(x)
            return x[:, prefix:] if prepend else x
        caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, padding_mask=padding_mask, cache=cache[:, i], cache_index=start)
            caches.append(layer_cache)
        x = self.final_norm(x)
        return (x[:, prefix:] if prepend else x), ops.stack(caches, axis=1)

    def initial_cache(self, batch_size, length):
        """An empty key/value cache `(B, L, 2, S, K, H)` in the compute dtype, for `length` real tokens.

        With a soft prompt, `S = num_virtual_tokens + length`.
        """
        return ops.zeros(
            (batch_size, self.num_layers, 2, self.num_virtual_tokens + length, self.num_key_value_heads, self.head_dim),
            dtype=self.compute_dtype,
        )

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
            }
        )
        return config


def _rematerialized(block, padding_mask, training):
    """`block` as a function of its input whose activations are recomputed in the backward pass.

    `keras.remat` (jax.checkpoint, torch.utils.checkpoint, tf.recompute_grad) traces every argument of
    the function it wraps, so the Python `training` flag and the mask are closed over instead of passed:
    `keras.RematScope` passes them as arguments and fails on JAX for layers that branch on `training`.
    """

    def call(x):
        return block(x, padding_mask=padding_mask, training=training)

    return keras.remat(call)
