"""Writing a kerasllm model as a Hugging Face model directory that transformers loads as is."""

import json
import os
import shutil
import tempfile

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy)
import numpy as np

from kerasllm.models.hugging_face import loading
from kerasllm.models.hugging_face.config import UnsupportedConfig
from kerasllm.models.hugging_face.weights import computed_value, layers_by_path, to_hugging_face
from kerasllm.models.transformer_backbone import resolved_layer_types
from kerasllm.utils import deferred_variables
from kerasllm.utils.safetensors_io import write_safetensors

# Options that change training only: a transformers model computes the same thing whatever they are.
TRAINING_ONLY = ("dropout", "remat")
EXPORT_DTYPES = ("float32", "float16", "bfloat16")


def export_to_transformers(model, directory, task, tokenizer=None, dtype=None, model_type=None,
                           max_shard_size="5GB", overwrite=False):
    """Writes `model` (and `tokenizer`) to `directory` in the format of `transformers`' `save_pretrained`.

    See `LanguageModel.export_to_transformers` for the arguments. The folder is written next to its
    final place and renamed into it, so a failed export leaves no half-written model.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and os.listdir(directory) and not overwrite:
        raise FileExistsError(f"{directory!r} exists and is not empty; pass overwrite=True to replace it, or choose a new folder.")
    dtype = _export_dtype(model, dtype)
    config = model.get_config()
    family = _family(config, task, model_type)
    hf_config = _checked_hf_config(model, config, family, task)
    hf_config["torch_dtype"] = dtype
    if tokenizer is not None:
        model.check_tokenizer(tokenizer)
    for role in ("bos", "eos", "pad"):  # explicit, or transformers fills in its family's (e.g. GPT-2's 50256)
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        hf_config[f"{role}_token_id"] = None if token_id is None else int(token_id)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        write_safetensors(_tensors(model, config, family, task, dtype), staging, max_shard_size=max_shard_size)
        _write_json(os.path.join(staging, "config.json"), hf_config)
        generation = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf_config[k] is not None}
        if generation:
            _write_json(os.path.join(staging, "generation_config.json"), generation)
        if tokenizer is not None:
            tokenizer.export_to_transformers(staging, model_max_length=model.max_sequence_length)
        _replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _export_dtype(model, dtype):
    dtype = dtype or model.dtype_policy.variable_dtype
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"Cannot export in dtype {dtype!r}; use one of {EXPORT_DTYPES}.")
    return dtype


def _family(config, task, model_type):
    """The Hugging Face family to write: `model_type` if given, else the one whose options the model uses."""
    if model_type is not None:
        if model_type not in loading.FAMILIES:
            raise ValueError(f"Unknown model_type {model_type!r}; kerasllm exports {sorted(loading.FAMILIES)}.")
        return loading.FAMILIES[model_type]
    if task != "causal_lm":
        return loading.FAMILIES["bert"]
    if config["position_embedding"] == "learned":
        return loading.FAMILIES["gpt2"]
    if config["normalization"] == "rmsnorm_plus_one":
        return loading.FAMILIES["gemma3_text"]
    if config["qk_norm"]:
        return loading.FAMILIES["qwen3"]
    if config["qkv_bias"] and not config["use_bias"]:
        return loading.FAMILIES["qwen2"]
    if config["sliding_window"]:
        types = resolved_layer_types(config["layer_types"], config["num_layers"], config["sliding_window"])
        if "full_attention" in types:
            return loading.FAMILIES["qwen2"]
        return loading.FAMILIES["mistral"]
    return loading.FAMILIES["llama"]


def _checked_hf_config(model, config, family, task):
    """The family's config.json for the model, after checking that it describes the model exactly:
    reading it back must give the model's own architecture."""
    if task not in family.TASKS:
        raise ValueError(f"A {family.NAME} checkpoint cannot hold this model's task.")
    hf_config = family.to_hugging_face(config, task)
    from kerasllm.models.language_model import ARCHITECTURE_ARGUMENTS

    # Read back from the family's config alone: an option it cannot hold comes back as its default.
    kept = {k: v for k, v in config.items() if k not in ARCHITECTURE_ARGUMENTS or k in TRAINING_ONLY}
    try:
        read_back = family.to_kerasllm(hf_config)
    except UnsupportedConfig as error:  # e.g. an activation the family's config has no name for
        raise ValueError(f"This model cannot be written as a {family.NAME} checkpoint: {error}") from None
    expected = _normalized(model, {**kept, **read_back})
    different = sorted(
        name for name in ARCHITECTURE_ARGUMENTS
        if name not in TRAINING_ONLY and expected.get(name) != config.get(name)
    )
    if different:
        details = ", ".join(f"{name}={config.get(name)!r} (the {family.NAME} format gives {expected.get(name)!r})" for name in different)
        raise ValueError(
            f"This model cannot be written as a {family.NAME} checkpoint without changing it: {details}. "
            f"Pass model_type= one of {sorted(loading.FAMILIES)} whose format has these options, or export a model "
            "built with that family's options."
        )
    return hf_config


def _normalized(model, config):
    """`config` as the model class stores it (defaults filled in), built without allocating weights."""
    with deferred_variables.uninitialized_variables():
        shadow = type(model).from_config({k: v for k, v in config.items() if k not in ("lora", "low_rank", "prompt_tuning")})
    deferred_variables.discard(shadow.variables)
    return shadow.get_config()


def _tensors(model, config, family, task, dtype):
    """`(name, array)` per Hugging Face tensor, computed one at a time."""
    layers = layers_by_path(model)
    prefix = family.EXPORT_PREFIX
    for entry in family.weights(config, task):
        values = [computed_value(layers, path, attribute) for path, attribute in entry.targets]
        array = to_hugging_face([np.asarray(v, dtype="float32") for v in values], entry.layout)
        yield (entry.name if entry.head else prefix + entry.name), array.astype(dtype)


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, sort_keys=True)
        file.write("\n")


def _replace(staging, directory):
    """Moves the finished folder into place; an existing one is removed only after that succeeded."""
    old = None
    if os.path.exists(directory):
        old = directory + ".old-" + os.path.basename(staging)
        os.replace(directory, old)
    os.replace(staging, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
