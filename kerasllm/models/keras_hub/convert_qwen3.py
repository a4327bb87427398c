"""KerasHub Qwen3 -> kerasllm: Llama's layout with per-head RMS norms of queries and keys.

The norms (`query_dense_layernorm`, `key_dense_layernorm`, applied before RoPE) are kerasllm's
`qk_norm`. KerasHub builds them with epsilon 1e-5 whatever `layer_norm_epsilon` is (Qwen3 checkpoints
use 1e-6): they convert with kerasllm's `qk_norm_epsilon`. KerasHub applies
`sliding_window_size` on TensorFlow only, as for Qwen2 (see `convert_qwen`): the converted model is
limited to that many positions.
"""

from kerasllm.models.keras_hub import convert_llama, convert_qwen
from kerasllm.models.keras_hub.common import linear_rope_scaling, tied

BACKBONES = ("Qwen3Backbone",)
TASKS = ("Qwen3CausalLM",)
CAUSAL = True
TASK_WEIGHTS = False
NORMS = ("Qwen3LayerNorm",)
EPSILON_HINT = ""
QK_NORM_LAYERS = ("query_dense_layernorm", "key_dense_layernorm")

TOP = convert_llama.TOP
BLOCK_PREFIX = convert_llama.BLOCK_PREFIX
BLOCK = {
    **convert_llama.BLOCK,
    "attention/query_norm": "self_attention/query_dense_layernorm",
    "attention/key_norm": "self_attention/key_dense_layernorm",
}


def convert_config(backbone):
    return dict(
        vocabulary_size=backbone.vocabulary_size,
        num_layers=backbone.num_layers,
        num_heads=backbone.num_query_heads,
        hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        num_key_value_heads=backbone.num_key_value_heads,
        head_dim=backbone.head_dim or backbone.hidden_dim // backbone.num_query_heads,
        position_embedding="rotary",
        normalization="rmsnorm",
        activation="swiglu",
        use_bias=False,
        qk_norm=True,
        tie_word_embeddings=tied(backbone),
        dropout=float(backbone.dropout),
        rope_max_wavelength=float(backbone.rope_max_wavelength),
        rope_scaling=linear_rope_scaling(backbone.rope_scaling_factor),
    )


def max_length_limit(backbone):
    if not backbone.sliding_window_size:
        return None, None
    return int(backbone.sliding_window_size), convert_qwen.window_reason(backbone)
