"""KerasHub Qwen2 (`QwenBackbone`) -> kerasllm: Llama's layout with query/key/value biases.

The biases are `(heads, head_dim)` in KerasHub, flattened head-major into kerasllm's `qkv_bias`.
KerasHub applies `use_sliding_window_attention` only where no fused attention op is available
(TensorFlow; JAX and torch ignore it), so its outputs for inputs longer than `sliding_window_size`
depend on the backend. The converted model is then limited to `sliding_window_size` positions, where
every backend agrees (and the window never applies).
"""

from kerasllm.models.keras_hub import convert_llama
from kerasllm.models.keras_hub.common import linear_rope_scaling, llama_layout_config

BACKBONES = ("QwenBackbone",)
TASKS = ("QwenCausalLM",)
CAUSAL = True
TASK_WEIGHTS = False
NORMS = ("QwenLayerNorm",)
EPSILON_HINT = ""

TOP = convert_llama.TOP
BLOCK_PREFIX = convert_llama.BLOCK_PREFIX
BLOCK = convert_llama.BLOCK


def convert_config(backbone):
    return llama_layout_config(
        backbone,
        head_dim=backbone.hidden_dim // backbone.num_query_heads,  # as KerasHub's QwenAttention computes it
        rope_scaling=linear_rope_scaling(backbone.rope_scaling_factor),
        qkv_bias=True,
    )


def max_length_limit(backbone):
    if not backbone.use_sliding_window_attention:
        return None, None
    return int(backbone.sliding_window_size), window_reason(backbone)


def window_reason(backbone):
    return (
        f"this {type(backbone).__name__} has a sliding window of {backbone.sliding_window_size}, which KerasHub 0.32 "
        "applies on TensorFlow only (its fused JAX/torch attention ignores it), so longer inputs have no single "
        "KerasHub result to match."
    )
