"""KerasHub Mistral -> kerasllm: Llama's layout with a sliding window on every layer.

KerasHub's window lets query `i` see key `j` when `i - sliding_window < j <= i`, which is kerasllm's
`sliding_window` exactly. `rope_scaling_factor` divides the RoPE frequencies: kerasllm's linear
scaling. The head is never tied (`token_embedding/reverse_embeddings` -> `lm_head/kernel`).
"""

from kerasllm.models.keras_hub import convert_llama
from kerasllm.models.keras_hub.common import linear_rope_scaling, tied

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
        tie_word_embeddings=tied(backbone),
        dropout=float(backbone.dropout),
        rope_max_wavelength=float(backbone.rope_max_wavelength),
        rope_scaling=linear_rope_scaling(backbone.rope_scaling_factor),
        sliding_window=None if backbone.sliding_window is None else int(backbone.sliding_window),
    )
