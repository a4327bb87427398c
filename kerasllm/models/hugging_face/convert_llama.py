"""Llama (2 and 3.x, with `llama3`, `linear` or `yarn` RoPE scaling): config map and weight map.

Mistral, Qwen2 and Qwen3 share this weight layout (`convert_mistral.py`, `convert_qwen2.py`,
`convert_qwen3.py` reuse `decoder_weights`); Gemma 3 adds its sandwich norms.
"""

from kerasllm.models.hugging_face import config as hf
from kerasllm.models.hugging_face.weights import Weight, linear, norm

NAME = "Llama"
MODEL_TYPES = ("llama",)
TASKS = {"causal_lm": "LlamaForCausalLM"}
BASE_PREFIXES = ("model.", "")
EXPORT_PREFIX = "model."


def to_kerasllm(config, family=NAME):
    """kerasllm `CausalLM` arguments for a Llama-family `config.json`."""
    hf.require(config, "pretraining_tp", (None, 1, 2, 4, 8), family)  # only splits the matmuls: same result
    theta, scaling = hf.rope(config, family)
    heads = config["num_attention_heads"]
    attention_bias = bool(config.get("attention_bias", False))
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        max_sequence_length=config.get("max_position_embeddings", 2048),
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        head_dim=hf.head_dim(config, family),
        position_embedding="rotary",
        normalization="rmsnorm",
        activation=hf.activation(config, "hidden_act", True, family),
        use_bias=attention_bias,
        qkv_bias=attention_bias,
        mlp_bias=bool(config.get("mlp_bias", False)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        layer_norm_epsilon=config.get("rms_norm_eps", 1e-6),
        rope_max_wavelength=theta,
        rope_scaling=scaling,
    )


def to_hugging_face(config, task="causal_lm"):
    """A Llama `config.json` for kerasllm `CausalLM` arguments."""
    return dict(
        model_type="llama",
        architectures=[TASKS[task]],
        **decoder_fields(config),
        attention_bias=config["use_bias"],
        mlp_bias=config["mlp_bias"],
        hidden_act=hf.GATED_TO_HF.get(config["activation"], config["activation"]),
    )


def decoder_fields(config):
    """The fields every Llama-family config shares."""
    return dict(
        vocab_size=config["vocabulary_size"],
        hidden_size=config["hidden_dim"],
        intermediate_size=config["intermediate_dim"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        head_dim=config["head_dim"],
        max_position_embeddings=config["max_sequence_length"],
        rms_norm_eps=config["layer_norm_epsilon"],
        tie_word_embeddings=config["tie_word_embeddings"],
        **hf.rope_to_hf(config["rope_max_wavelength"], config["rope_scaling"]),
    )


def decoder_weights(config, sandwich=False):
    """The weight map of a Llama-layout decoder (`model.layers.{i}...`), its final norm and head.

    With `sandwich`, Gemma's four norms per layer: `input_layernorm`, `post_attention_layernorm` (on
    the attention output), `pre_feedforward_layernorm`, `post_feedforward_layernorm`. Without it,
    Llama's two, where `post_attention_layernorm` is the norm before the feed-forward network.
    """
    kind = config["normalization"]
    use_bias = config["use_bias"]
    qkv_bias = use_bias if config.get("qkv_bias") is None else config["qkv_bias"]
    mlp_bias = use_bias if config.get("mlp_bias") is None else config["mlp_bias"]
    entries = [Weight("embed_tokens.weight", (("backbone/token_embedding", "embeddings"),))]
    for i in range(config["num_layers"]):
        hf_layer, block = f"layers.{i}.", f"backbone/block_{i}/"
        entries += norm(hf_layer + "input_layernorm", block + "attention_norm", kind)
        for name, path in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            entries += linear(hf_layer + "self_attn." + name, block + "attention/" + path, qkv_bias)
        entries += linear(hf_layer + "self_attn.o_proj", block + "attention/output", use_bias)
        if config.get("qk_norm"):
            entries += norm(hf_layer + "self_attn.q_norm", block + "attention/query_norm", kind)
            entries += norm(hf_layer + "self_attn.k_norm", block + "attention/key_norm", kind)
        if sandwich:
            entries += norm(hf_layer + "post_attention_layernorm", block + "post_attention_norm", kind)
            entries += norm(hf_layer + "pre_feedforward_layernorm", block + "feedforward_norm", kind)
            entries += norm(hf_layer + "post_feedforward_layernorm", block + "post_feedforward_norm", kind)
        else:
            entries += norm(hf_layer + "post_attention_layernorm", block + "feedforward_norm", kind)
        for name, path in (("gate_proj", "gate"), ("up_proj", "intermediate"), ("down_proj", "output")):
            entries += linear(hf_layer + "mlp." + name, block + "feedforward/" + path, mlp_bias)
    entries += norm("norm", "backbone/final_norm", kind)
    if not config["tie_word_embeddings"]:
        entries += linear("lm_head", "lm_head", head=True)
    return entries


def weights(config, task="causal_lm"):
    return decoder_weights(config)


def ignored(config, task="causal_lm"):
    """Tensors a checkpoint may hold that the model does not need: RoPE buffers of old checkpoints,
    and a tied head's copy of the embedding."""
    patterns = [r".*rotary_emb\.inv_freq"]
    if config["tie_word_embeddings"]:
        patterns.append(r"lm_head\.weight")
    return patterns
