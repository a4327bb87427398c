"""Reading Hugging Face `config.json` fields the way transformers does, with errors for what kerasllm
cannot build exactly (a silently different model is worse than none)."""

import json
import os

from kerasllm.layers.rotary_embedding import validate_rope_scaling

CONFIG_FILE = "config.json"

# Hugging Face activation names -> kerasllm's (non-gated and gated forms).
PLAIN_ACTIVATIONS = {
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": None,  # a different polynomial: refused
    "relu": "relu",
}
GATED_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}
# kerasllm's activations back to Hugging Face names, for export.
PLAIN_TO_HF = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu"}
GATED_TO_HF = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}


class UnsupportedConfig(ValueError):
    """A `config.json` option that kerasllm cannot reproduce exactly."""


def read_config(directory):
    """The parsed `config.json` of a Hugging Face model directory, with clear errors."""
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No model directory at {directory!r}. Pass a folder holding a Hugging Face checkpoint "
            "(config.json and *.safetensors), a preset name, or a kerasllm .keras file."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{directory!r} has no {CONFIG_FILE}: a Hugging Face model directory holds config.json next to "
            "its *.safetensors files (as `save_pretrained` writes them)."
        )
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path!r} is not valid JSON ({error}). Restore the file from the original checkpoint.") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} must hold a JSON object, got {type(config).__name__}.")
    return config


def require(config, option, allowed, family):
    """Raises `UnsupportedConfig` unless `config.get(option)` is one of `allowed` (absent counts as None)."""
    value = config.get(option)
    if value not in allowed:
        raise UnsupportedConfig(
            f"{family} config.json sets {option}={value!r}, which kerasllm does not support (supported: "
            f"{list(allowed)}). Loading it would build a different model, so it is refused."
        )


def activation(config, option, gated, family):
    """kerasllm's activation for the Hugging Face activation named in `config[option]`."""
    name = config.get(option)
    table = GATED_ACTIVATIONS if gated else PLAIN_ACTIVATIONS
    if table.get(name) is None:
        raise UnsupportedConfig(
            f"{family} config.json sets {option}={name!r}; kerasllm supports "
            f"{sorted(k for k, v in table.items() if v)} for this family."
        )
    return table[name]


def rope(config, family, layer_type=None, default_theta=10000.0):
    """`(rope_max_wavelength, rope_scaling)` from either config style.

    transformers 5 writes `rope_parameters` (flat, or nested by layer type for Gemma 3); older configs
    write `rope_theta` and `rope_scaling` (whose type key may be `type`).
    """
    parameters = config.get("rope_parameters")
    if isinstance(parameters, dict) and layer_type is not None and isinstance(parameters.get(layer_type), dict):
        parameters = parameters[layer_type]
    if isinstance(parameters, dict) and ("rope_type" in parameters or "rope_theta" in parameters):
        scaling = dict(parameters)
        theta = scaling.pop("rope_theta", None)
    else:
        scaling = dict(config.get("rope_scaling") or {})
        theta = None
    if theta is None:
        theta = config.get("rope_theta", default_theta)
    if "type" in scaling:
        scaling.setdefault("rope_type", scaling.pop("type"))
    partial = scaling.pop("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise UnsupportedConfig(f"{family} config.json sets partial_rotary_factor={partial!r}; kerasllm rotates whole heads only.")
    rope_type = scaling.get("rope_type", "default")
    if rope_type in ("llama3", "yarn"):
        scaling.setdefault("original_max_position_embeddings", config.get("max_position_embeddings"))
    if rope_type == "yarn" and scaling.get("factor") is None:
        scaling["factor"] = config["max_position_embeddings"] / scaling["original_max_position_embeddings"]
    if rope_type == "default":
        scaling = None
    try:
        scaling = validate_rope_scaling(scaling)
    except ValueError as error:
        raise UnsupportedConfig(f"{family} config.json: {error}") from error
    return float(theta), scaling


def rope_to_hf(theta, scaling):
    """Old-style RoPE fields (`rope_theta`, `rope_scaling`): what every transformers version and the
    llama.cpp converter read."""
    fields = {"rope_theta": theta}
    if scaling:
        fields["rope_scaling"] = dict(scaling)
    return fields


def head_dim(config, family):
    heads = config["num_attention_heads"]
    dim = config.get("head_dim")
    if dim is None:
        if config["hidden_size"] % heads:
            raise UnsupportedConfig(f"{family} config.json: hidden_size is not divisible by num_attention_heads.")
        dim = config["hidden_size"] // heads
    return dim



def compact_layer_types(types, window):
    """`None` when `types` is the default pattern for `window` (every block sliding with a window, every
    block full without), else the list: configs stay valid when a student drops blocks."""
    default = "sliding_attention" if window else "full_attention"
    return None if all(kind == default for kind in types) else list(types)
