"""KerasHub GPT-2 -> kerasllm: learned positions, LayerNorm, tanh-form GELU, biases, tied head.

KerasHub's GPT-2 blocks are its generic `TransformerDecoder` (pre-norm, epsilon 1e-5) with Keras
`MultiHeadAttention`, whose query/key/value kernels are `(hidden, heads, head_dim)` and output kernel
`(heads, head_dim, hidden)`: flattened head-major into kerasllm's `Dense` kernels.
"""

from kerasllm.models.keras_hub.common import tied

BACKBONES = ("GPT2Backbone",)
TASKS = ("GPT2CausalLM",)
CAUSAL = True
TASK_WEIGHTS = False
NORMS = ("LayerNormalization",)
EPSILON_HINT = ""

TOP = {
    "backbone/token_embedding": "token_embedding",
    "backbone/position_embedding": "position_embedding",
    "backbone/final_norm": "layer_norm",
}
BLOCK_PREFIX = ("backbone/block_{i}", "transformer_layer_{i}")
BLOCK = {
    "attention_norm": "self_attention_layer_norm",
    "attention/query": "self_attention/query",
    "attention/key": "self_attention/key",
    "attention/value": "self_attention/value",
    "attention/output": "self_attention/attention_output",
    "feedforward_norm": "feedforward_layer_norm",
    "feedforward/intermediate": "feedforward_intermediate_dense",
    "feedforward/output": "feedforward_output_dense",
}


def convert_config(backbone):
    return dict(
        vocabulary_size=backbone.vocabulary_size,
        num_layers=backbone.num_layers,
        num_heads=backbone.num_heads,
        hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        max_sequence_length=backbone.max_sequence_length,
        position_embedding="learned",
        normalization="layernorm",
        activation="gelu",  # KerasHub's `gelu_approximate`: the tanh form
        use_bias=True,
        tie_word_embeddings=tied(backbone),
        dropout=float(backbone.dropout),
    )
