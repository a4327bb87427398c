"""KerasHub Qwen3 -> kerasllm: Llama's layout with per-head RMS norms of queries and keys.

The norms (`query_dense_layernorm`, `key_dense_layernorm`, applied before RoPE) are kerasllm's
`qk_norm`. KerasHub builds them with epsilon 1e-5 whatever `layer_norm_epsilon` is (Qwen3 checkpoints
use 1e-6): they convert with kerasllm's `qk_norm_epsilon`. KerasHub applies
`sliding_window_size` on TensorFlow only, as for Qwen2 (see `convert_qwen`): the converted model is
limited to that many positions.
"""

from kerasllm.models.keras_hub import convert_llama, convert_qwen
from kerasllm.models.keras_hub.common import linear_rope_scaling, llama_layout_config

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
    return llama_layout_config(
        backbone,
        head_dim=backbone.head_dim or backbone.hidden_dim // backbone.num_query_heads,
        rope_scaling=linear_rope_scaling(backbone.rope_scaling_factor),
        qk_norm=True,
    )


def max_length_limit(backbone):
    if not backbone.sliding_window_size:
        return None, None
    return int(backbone.sliding_window_size), convert_qwen.window_reason(backbone)
