"""GPT-2: learned positions, LayerNorm, the tanh GELU, biases everywhere, fused query/key/value.

Its `Conv1D` weights are stored `(in, out)` like a Keras kernel (no transpose); `c_attn` holds the
query, key and value kernels side by side. `GPT2LMHeadModel` checkpoints prefix the base model with
`transformer.`; the original OpenAI checkpoints have no prefix.
"""

from kerasllm.models.hugging_face import config as hf
from kerasllm.models.hugging_face.weights import Weight, linear, norm

NAME = "GPT-2"
MODEL_TYPES = ("gpt2",)
TASKS = {"causal_lm": "GPT2LMHeadModel"}
BASE_PREFIXES = ("transformer.", "")
EXPORT_PREFIX = "transformer."


def to_kerasllm(config):
    hf.require(config, "scale_attn_weights", (None, True), NAME)
    hf.require(config, "scale_attn_by_inverse_layer_idx", (None, False), NAME)
    hf.require(config, "add_cross_attention", (None, False), NAME)
    hidden = config["n_embd"]
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["n_layer"],
        num_heads=config["n_head"],
        hidden_dim=hidden,
        intermediate_dim=config.get("n_inner") or 4 * hidden,
        max_sequence_length=config.get("n_positions", 1024),
        position_embedding="learned",
        normalization="layernorm",
        activation=hf.activation(dict(config, act=config.get("activation_function", "gelu_new")), "act", False, NAME),
        use_bias=True,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
    )


def to_hugging_face(config, task="causal_lm"):
    return dict(
        model_type="gpt2",
        architectures=[TASKS[task]],
        vocab_size=config["vocabulary_size"],
        n_embd=config["hidden_dim"],
        n_layer=config["num_layers"],
        n_head=config["num_heads"],
        n_inner=config["intermediate_dim"],
        n_positions=config["max_sequence_length"],
        activation_function=hf.PLAIN_TO_HF.get(config["activation"], config["activation"]),
        layer_norm_epsilon=config["layer_norm_epsilon"],
        tie_word_embeddings=config["tie_word_embeddings"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def weights(config, task="causal_lm"):
    entries = [
        Weight("wte.weight", (("backbone/token_embedding", "embeddings"),)),
        Weight("wpe.weight", (("backbone/position_embedding", "position_embeddings"),)),
    ]
    for i in range(config["num_layers"]):
        hf_layer, block = f"h.{i}.", f"backbone/block_{i}/"
        qkv = [block + "attention/" + name for name in ("query", "key", "value")]
        entries += norm(hf_layer + "ln_1", block + "attention_norm", "layernorm")
        entries.append(Weight(hf_layer + "attn.c_attn.weight", tuple((p, "kernel") for p in qkv), "split"))
        entries.append(Weight(hf_layer + "attn.c_attn.bias", tuple((p, "bias") for p in qkv), "split"))
        entries += _conv1d(hf_layer + "attn.c_proj", block + "attention/output")
        entries += norm(hf_layer + "ln_2", block + "feedforward_norm", "layernorm")
        entries += _conv1d(hf_layer + "mlp.c_fc", block + "feedforward/intermediate")
        entries += _conv1d(hf_layer + "mlp.c_proj", block + "feedforward/output")
    entries += norm("ln_f", "backbone/final_norm", "layernorm")
    if not config["tie_word_embeddings"]:
        entries += linear("lm_head", "lm_head", head=True)
    return entries


def _conv1d(name, path):
    return [Weight(f"{name}.weight", ((path, "kernel"),)), Weight(f"{name}.bias", ((path, "bias"),))]


def ignored(config, task="causal_lm"):
    """The causal-mask buffers of older checkpoints, and a tied head's copy of the embedding."""
    patterns = [r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias"]
    if config["tie_word_embeddings"]:
        patterns.append(r"lm_head\.weight")
    return patterns
