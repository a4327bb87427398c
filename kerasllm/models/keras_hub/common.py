"""Small helpers the family converters share."""


def check(condition, message):
    """Raises a `ValueError` with `message` unless `condition` holds."""
    if not condition:
        raise ValueError(message)


def linear_rope_scaling(factor):
    """KerasHub's `rope_scaling_factor` (frequencies divided by it) as a kerasllm `rope_scaling`."""
    return None if float(factor) == 1.0 else {"rope_type": "linear", "factor": float(factor)}


def tied(backbone):
    """Whether the KerasHub output head reuses the token embedding."""
    return bool(backbone.token_embedding.tie_weights)


def llama_layout_config(backbone, head_dim, rope_scaling, **options):
    """kerasllm arguments for a KerasHub backbone in Llama's layout (RMS norms, SwiGLU, rotary
    positions, grouped-query attention, no biases), with the family's own `options` on top."""
    return dict(
        vocabulary_size=backbone.vocabulary_size,
        num_layers=backbone.num_layers,
        num_heads=backbone.num_query_heads,
        hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        num_key_value_heads=backbone.num_key_value_heads,
        head_dim=head_dim,
        position_embedding="rotary",
        normalization="rmsnorm",
        activation="swiglu",
        use_bias=False,
        tie_word_embeddings=tied(backbone),
        dropout=float(backbone.dropout),
        rope_max_wavelength=float(backbone.rope_max_wavelength),
        rope_scaling=rope_scaling,
        **options,
    )
