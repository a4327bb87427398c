"""Qwen2 and Qwen2.5: Llama's layout with biases on the query, key and value projections only, and an
optional sliding window on the layers from `max_window_layers` on (`use_sliding_window`)."""

from kerasllm.models.hugging_face import config as hf
from kerasllm.models.hugging_face import convert_llama
from kerasllm.models.transformer_backbone import resolved_layer_types

NAME = "Qwen2"
MODEL_TYPES = ("qwen2",)
TASKS = {"causal_lm": "Qwen2ForCausalLM"}
BASE_PREFIXES = convert_llama.BASE_PREFIXES
EXPORT_PREFIX = convert_llama.EXPORT_PREFIX


def layer_types(config):
    """Which layers slide, as transformers decides it: `layer_types` when config.json lists it, else the
    layers from `max_window_layers` on when `use_sliding_window` is set."""
    count = config["num_hidden_layers"]
    window = config.get("sliding_window") if config.get("use_sliding_window") else None
    types = config.get("layer_types")
    if types is None:
        first = config.get("max_window_layers", count)
        types = ["sliding_attention" if window and i >= first else "full_attention" for i in range(count)]
    if "sliding_attention" in types and not window:
        raise hf.UnsupportedConfig(f"{NAME} config.json lists sliding_attention layers but no sliding_window.")
    return list(types), (window if "sliding_attention" in types else None)


def to_kerasllm(config, family=NAME):
    converted = convert_llama.to_kerasllm(dict(config, attention_bias=False, mlp_bias=False), family)
    types, window = layer_types(config)
    converted.update(qkv_bias=True, layer_types=hf.compact_layer_types(types, window), sliding_window=window)
    return converted


def to_hugging_face(config, task="causal_lm"):
    return dict(
        model_type="qwen2",
        architectures=[TASKS[task]],
        **convert_llama.decoder_fields(config),
        **window_fields(config),
        hidden_act=hf.GATED_TO_HF.get(config["activation"], config["activation"]),
    )


def window_fields(config):
    types = resolved_layer_types(config["layer_types"], config["num_layers"], config["sliding_window"])
    sliding = "sliding_attention" in types
    return dict(
        use_sliding_window=sliding,
        sliding_window=config["sliding_window"],
        max_window_layers=types.index("sliding_attention") if sliding else config["num_layers"],
        layer_types=types,
    )


weights = convert_llama.weights
ignored = convert_llama.ignored
