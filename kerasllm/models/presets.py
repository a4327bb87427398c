"""Architecture presets. Each builds a freshly initialised model (no weights are downloaded)."""

GPT2_STYLE = dict(position_embedding="learned", normalization="layernorm", activation="gelu", use_bias=True)
LLAMA_STYLE = dict(
    position_embedding="rotary",
    normalization="rmsnorm",
    activation="swiglu",
    use_bias=False,
    tie_word_embeddings=False,
    layer_norm_epsilon=1e-6,
)

CAUSAL_LM_PRESETS = {
    # Trains on a 2-core CPU in minutes.
    "tiny": dict(
        vocabulary_size=2048, num_layers=4, num_heads=4, hidden_dim=128, intermediate_dim=512,
        max_sequence_length=256, **GPT2_STYLE,
    ),
    # GPT-2 style, ~25M parameters with an 8192-token vocabulary.
    "small": dict(
        vocabulary_size=8192, num_layers=6, num_heads=8, hidden_dim=512, intermediate_dim=2048,
        max_sequence_length=512, **GPT2_STYLE,
    ),
    # The shape of GPT-2 small (124M); vocabulary padded to 50304 (a multiple of 64) as nanoGPT does.
    "gpt2-124m": dict(
        vocabulary_size=50304, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072,
        max_sequence_length=1024, **GPT2_STYLE,
    ),
    # Llama style (RoPE, RMSNorm, SwiGLU, grouped-query attention) at the tiny size.
    "tiny-llama": dict(
        vocabulary_size=2048, num_layers=4, num_heads=4, num_key_value_heads=2, hidden_dim=128,
        intermediate_dim=352, max_sequence_length=256, **LLAMA_STYLE,
    ),
    # Llama style, ~25M parameters with an 8192-token vocabulary.
    "llama-small": dict(
        vocabulary_size=8192, num_layers=6, num_heads=8, num_key_value_heads=4, hidden_dim=512,
        intermediate_dim=1408, max_sequence_length=512, **LLAMA_STYLE,
    ),
}

# The encoder presets share the GPT-2 style decoder shapes (bidirectional blocks instead of causal).
MASKED_LM_PRESETS = {name: CAUSAL_LM_PRESETS[name] for name in ("tiny", "small")}
