"""Gemma 3 (text): Llama's layout plus Gemma's own choices, each a kerasllm option.

Token embeddings scaled by `sqrt(hidden_size)`; RMS norms that multiply by `1 + w`; four norms per
layer (sandwich); RMS norms on each query and key head; GeGLU feed-forward; attention scores scaled by
`query_pre_attn_scalar ** -0.5`; local (sliding window) and global layers in `layer_types` (or every
`sliding_window_pattern`-th layer global, in older configs), with their own RoPE bases
(`rope_local_base_freq` and `rope_theta`, or transformers 5's nested `rope_parameters`); optional final
logit soft-capping. The multimodal `gemma3` checkpoints (4B and larger) load as their text model: the
vision tower and projector are left out, as a text-only model does not use them.
"""

import math

from kerasllm.models.hugging_face import config as hf
from kerasllm.models.hugging_face import convert_llama
from kerasllm.models.transformer_backbone import resolved_layer_types

NAME = "Gemma 3"
MODEL_TYPES = ("gemma3_text", "gemma3")
TASKS = {"causal_lm": "Gemma3ForCausalLM"}
# Text checkpoints, then multimodal ones as transformers 5 writes them and as transformers 4 did.
BASE_PREFIXES = ("model.", "", "language_model.model.", "model.language_model.")
EXPORT_PREFIX = "model."
# transformers' Gemma3TextConfig defaults: the text_config of multimodal checkpoints leaves most out.
TEXT_DEFAULTS = dict(
    vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, max_position_embeddings=131072, rms_norm_eps=1e-6, sliding_window=4096,
    query_pre_attn_scalar=256, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
)


def text_config(config):
    """The text model's config: `text_config` of a multimodal `gemma3` config, with transformers' defaults."""
    if config.get("model_type") != "gemma3":
        return config
    text = dict(TEXT_DEFAULTS, **(config.get("text_config") or {}))
    text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", True))
    return text


def to_kerasllm(config):
    config = text_config(config)
    hf.require(config, "attn_logit_softcapping", (None,), NAME)
    hf.require(config, "use_bidirectional_attention", (None, False), NAME)
    count = config["num_hidden_layers"]
    types = config.get("layer_types")
    if types is None:
        pattern = config.get("sliding_window_pattern", config.get("_sliding_window_pattern", 6))
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(count)]
    theta, scaling = hf.rope(config, NAME, "full_attention", default_theta=1_000_000.0)
    local_config = dict(config, rope_theta=config.get("rope_local_base_freq", 10_000.0), rope_scaling=None)
    local_theta, local_scaling = hf.rope(local_config, NAME, "sliding_attention")
    activation = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
    bias = bool(config.get("attention_bias", False))
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=count,
        num_heads=heads,
        hidden_dim=hidden,
        intermediate_dim=config["intermediate_size"],
        max_sequence_length=config.get("max_position_embeddings", 131072),
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim", 256),
        position_embedding="rotary",
        normalization="rmsnorm_plus_one",
        activation=hf.activation({"act": activation}, "act", True, NAME),
        use_bias=bias,
        qkv_bias=bias,
        mlp_bias=False,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        layer_norm_epsilon=config.get("rms_norm_eps", 1e-6),
        rope_max_wavelength=theta,
        rope_scaling=scaling,
        sliding_window=config.get("sliding_window") if "sliding_attention" in types else None,
        layer_types=hf.compact_layer_types(types, config.get("sliding_window") if "sliding_attention" in types else None),
        sliding_rope_max_wavelength=local_theta,
        sliding_rope_scaling=local_scaling,
        qk_norm=True,
        query_pre_attn_scalar=config.get("query_pre_attn_scalar", 256),
        embedding_scale=math.sqrt(hidden),
        sandwich_norm=True,
        final_logit_softcapping=config.get("final_logit_softcapping"),
    )


def to_hugging_face(config, task="causal_lm"):
    fields = convert_llama.decoder_fields(config)
    fields.update(
        model_type="gemma3_text",
        architectures=[TASKS[task]],
        hidden_activation=hf.GATED_TO_HF.get(config["activation"], config["activation"]),
        attention_bias=config["use_bias"],
        sliding_window=config["sliding_window"],
        layer_types=resolved_layer_types(config["layer_types"], config["num_layers"], config["sliding_window"]),
        rope_local_base_freq=config["sliding_rope_max_wavelength"],
        query_pre_attn_scalar=config["query_pre_attn_scalar"],
        final_logit_softcapping=config["final_logit_softcapping"],
        attn_logit_softcapping=None,
        use_bidirectional_attention=False,
    )
    if config["sliding_rope_scaling"]:
        raise ValueError("Gemma 3's config.json cannot express RoPE scaling on the local (sliding) layers.")
    return fields


def weights(config, task="causal_lm"):
    return convert_llama.decoder_weights(config, sandwich=True)


def ignored(config, task="causal_lm"):
    """What a text model does not use: a multimodal checkpoint's vision tower and projector, and a tied
    head's copy of the embedding."""
    patterns = [r"(model\.)?(vision_tower|multi_modal_projector)\..*", r".*rotary_emb\.inv_freq"]
    if config["tie_word_embeddings"]:
        patterns.append(r"(language_model\.|model\.language_model\.)?lm_head\.weight")
    return patterns
