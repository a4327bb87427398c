"""KerasHub Llama and Llama 3 -> kerasllm: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.

Llama 3.1's RoPE frequency adjustment (`rope_frequency_adjustment_factor`, `rope_low_freq_factor`,
`rope_high_freq_factor`, `rope_pretraining_sequence_length`) is kerasllm's
`rope_scaling={"rope_type": "llama3", ...}`. KerasHub's `EinsumDense` kernels (query
`(hidden, heads, head_dim)`, output `(heads, head_dim, hidden)`) are flattened head-major; the
untied head `token_embedding/reverse_embeddings` `(hidden, vocabulary)` is `lm_head/kernel`.
"""

from kerasllm.models.keras_hub.common import check, llama_layout_config

BACKBONES = ("LlamaBackbone", "Llama3Backbone")
TASKS = ("LlamaCausalLM", "Llama3CausalLM")
CAUSAL = True
TASK_WEIGHTS = False
NORMS = ("LlamaLayerNorm",)
EPSILON_HINT = ""

TOP = {
    "backbone/token_embedding": "token_embedding",
    "lm_head/kernel": "token_embedding/reverse_embeddings",
    "backbone/final_norm": "sequence_output_layernorm",
}
BLOCK_PREFIX = ("backbone/block_{i}", "transformer_layer_{i}")
BLOCK = {
    "attention_norm": "self_attention_layernorm",
    "attention/query": "self_attention/query",
    "attention/key": "self_attention/key",
    "attention/value": "self_attention/value",
    "attention/output": "self_attention/attention_output",
    "feedforward_norm": "feedforward_layernorm",
    "feedforward/gate": "feedforward_gate_dense",
    "feedforward/intermediate": "feedforward_intermediate_dense",
    "feedforward/output": "feedforward_output_dense",
}


def convert_config(backbone):
    name = type(backbone).__name__
    # KerasHub 0.32's LlamaRotaryEmbedding never reads it (its frequencies ignore the factor), so the
    # model computes an unscaled RoPE while its config asks for a scaled one: no single model matches.
    check(
        float(backbone.rope_position_scaling_factor) == 1.0,
        f"{name} sets rope_position_scaling_factor={backbone.rope_position_scaling_factor}, which KerasHub 0.32 "
        "ignores (its RoPE is unscaled), so its outputs do not follow its own config; kerasllm refuses to pick "
        "one. Supported: rope_position_scaling_factor=1.0, with or without the Llama 3.1 frequency adjustment.",
    )
    rope_scaling = None
    if backbone.rope_frequency_adjustment_factor is not None:
        rope_scaling = {
            "rope_type": "llama3",
            "factor": float(backbone.rope_frequency_adjustment_factor),
            "low_freq_factor": float(backbone.rope_low_freq_factor),
            "high_freq_factor": float(backbone.rope_high_freq_factor),
            "original_max_position_embeddings": int(backbone.rope_pretraining_sequence_length),
        }
    # head_dim as KerasHub's LlamaAttention computes it.
    return llama_layout_config(backbone, head_dim=backbone.hidden_dim // backbone.num_query_heads, rope_scaling=rope_scaling)
