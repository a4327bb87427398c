"""KerasHub Gemma 3 (text only) -> kerasllm.

Gemma 3's quirks map to kerasllm options: RMS norms multiplying by `1 + scale`
(`normalization="rmsnorm_plus_one"`), GeGLU with the tanh GELU on `ffw_gating` (`gate`) times
`ffw_gating_2` (`intermediate`), token embeddings scaled by `sqrt(hidden_dim)`, query/key norms,
post-attention and post-feedforward norms (`sandwich_norm`), soft-capped logits, and local/global
layers: KerasHub makes layer `i` local (sliding) when `i % 6 < 5`, with RoPE base 10 000 and
`local_rope_scaling_factor`, and global layers use base 1 000 000 and `global_rope_scaling_factor`
(kerasllm's `sliding_rope_*` and `rope_*`). KerasHub's window (`|i - j| < sliding_window_size`, with
the causal mask) is kerasllm's `sliding_window`. Settings are read from the layers, which is what KerasHub
computes with (its blocks do not receive every backbone argument). The query/key/value kernels
`(heads, hidden, head_dim)` and the output kernel `(heads, head_dim, hidden)` are flattened head-major.
"""

import math

from kerasllm.models.keras_hub.common import check, linear_rope_scaling, tied

BACKBONES = ("Gemma3Backbone",)
TASKS = ("Gemma3CausalLM",)
CAUSAL = True
TASK_WEIGHTS = False
NORMS = ("RMSNormalization",)
EPSILON_HINT = " (KerasHub's Gemma 3 blocks always use 1e-6; only its final norm takes `layer_norm_epsilon`)"

TOP = {"backbone/token_embedding": "token_embedding", "backbone/final_norm": "final_normalization"}
BLOCK_PREFIX = ("backbone/block_{i}", "decoder_block_{i}")
BLOCK = {
    "attention_norm": "pre_attention_norm",
    "post_attention_norm": "post_attention_norm",
    "attention/query": "attention/query",
    "attention/key": "attention/key",
    "attention/value": "attention/value",
    "attention/output": "attention/attention_output",
    "attention/query_norm": "attention/query_norm",
    "attention/key_norm": "attention/key_norm",
    "feedforward_norm": "pre_ffw_norm",
    "post_feedforward_norm": "post_ffw_norm",
    "feedforward/gate": "ffw_gating",
    "feedforward/intermediate": "ffw_gating_2",
    "feedforward/output": "ffw_linear",
}


def convert_config(backbone):
    check(
        backbone.vision_encoder is None,
        "This Gemma3Backbone has a vision encoder; kerasllm converts text-only Gemma 3 models "
        "(vision_encoder=None), and dropping the vision weights would change the model.",
    )
    for option, default in (("use_bidirectional_attention", False), ("is_embedding_model", False)):
        check(
            bool(getattr(backbone, option)) == default,
            f"Gemma3Backbone {option}=True is not supported; kerasllm converts the causal language model "
            f"({option}={default}).",
        )
    blocks = backbone.transformer_layers
    attentions = [block.attention for block in blocks]
    check(
        all(a.logit_soft_cap is None for a in attentions),
        f"Gemma3Backbone attention_logit_soft_cap={backbone.attention_logit_soft_cap} is not supported: kerasllm "
        "has no attention-score soft-capping (only final_logit_softcapping). Supported: None (Gemma 3's own).",
    )
    check(
        all(a.query_head_dim_normalize for a in attentions) and backbone.query_head_dim_normalize,
        "Gemma3Backbone query_head_dim_normalize=False is ignored by KerasHub 0.32 (its blocks always scale "
        "queries by head_dim ** -0.5), so its outputs do not follow its own config; kerasllm refuses to pick one.",
    )
    post_attention = {bool(b.use_post_attention_norm) for b in blocks}
    post_feedforward = {bool(b.use_post_ffw_norm) for b in blocks}
    check(
        post_attention == post_feedforward and len(post_attention) == 1,
        "Gemma3Backbone with use_post_attention_norm != use_post_ffw_norm is not supported: kerasllm's "
        "`sandwich_norm` adds both norms or neither.",
    )
    check(
        len({bool(a.use_query_key_norm) for a in attentions}) == 1,
        "Gemma 3 blocks disagree on use_query_key_norm.",
    )
    check(
        all(b.gate_dim_reduction == 1 for b in blocks),
        "Gemma 3 blocks with gate_dim_reduction != 1 are not supported.",
    )
    layer_types = ["sliding_attention" if a.use_sliding_window_attention else "full_attention" for a in attentions]
    rope = {kind: set() for kind in ("sliding_attention", "full_attention")}
    windows = set()
    for kind, attention in zip(layer_types, attentions):
        rope[kind].add((float(attention.rope_wavelength), float(attention.rope_scaling_factor)))
        if kind == "sliding_attention":
            windows.add(int(attention.sliding_window_size))
    check(
        all(len(values) <= 1 for values in rope.values()) and len(windows) <= 1,
        f"Gemma 3 layers of one kind disagree on RoPE {rope} or window {windows}.",
    )
    soft_cap = backbone.token_embedding.logit_soft_cap
    # A model of local layers only has no global RoPE to read; kerasllm's then goes unused.
    (global_base, global_factor), = rope["full_attention"] or {(1_000_000.0, 1.0)}
    config = dict(
        vocabulary_size=backbone.vocabulary_size,
        num_layers=backbone.num_layers,
        num_heads=backbone.num_query_heads,
        hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        num_key_value_heads=backbone.num_key_value_heads,
        head_dim=backbone.head_dim,
        position_embedding="rotary",
        normalization="rmsnorm_plus_one",
        activation="geglu",
        use_bias=False,
        tie_word_embeddings=tied(backbone),
        dropout=float(backbone.dropout),
        rope_max_wavelength=global_base,
        rope_scaling=linear_rope_scaling(global_factor),
        qk_norm=bool(attentions[0].use_query_key_norm),
        sandwich_norm=post_attention.pop(),
        embedding_scale=math.sqrt(backbone.hidden_dim),
        final_logit_softcapping=None if soft_cap is None else float(soft_cap),
    )
    if windows:
        (local_base, local_factor), = rope["sliding_attention"]
        config.update(
            sliding_window=windows.pop(),
            layer_types=layer_types,
            sliding_rope_max_wavelength=local_base,
            sliding_rope_scaling=linear_rope_scaling(local_factor),
        )
    return config
