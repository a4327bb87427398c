"""KerasHub Mistral -> kerasllm: Llama's layout with a sliding window on every layer.

KerasHub's window lets query `i` see key `j` when `i - sliding_window < j <= i`, which is kerasllm's
`sliding_window` exactly. `rope_scaling_factor` divides the RoPE frequencies: kerasllm's linear
scaling. The head is never tied (`token_embedding/reverse_embeddings` -> `lm_head/kernel`).
"""

from kerasllm.models.keras_hub import convert_llama
from kerasllm.models.keras_hub.common import linear_rope_scaling, llama_layout_config

BACKBONES = ("MistralBackbone",)
TASKS = ("MistralCausalLM",)
CAUSAL = True
TASK_WEIGHTS = False
NORMS = ("MistralLayerNormalization",)
EPSILON_HINT = ""

TOP = convert_llama.TOP
BLOCK_PREFIX = convert_llama.BLOCK_PREFIX
BLOCK = convert_llama.BLOCK


def convert_config(backbone):
    return llama_layout_config(
        backbone,
        head_dim=backbone.head_dim or backbone.hidden_dim // backbone.num_query_heads,
        rope_scaling=linear_rope_scaling(backbone.rope_scaling_factor),
        sliding_window=None if backbone.sliding_window is None else int(backbone.sliding_window),
    )
