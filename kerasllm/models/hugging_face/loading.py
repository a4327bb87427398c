"""Building a kerasllm model from a Hugging Face model directory (config.json + *.safetensors).

The model is built without initializing its variables; every tensor's name and shape is checked
against the model before any tensor data is read; then each tensor is read from the memory-mapped
file on its own, cast to its variable's dtype and handed to that variable. A checkpoint that does not
match its config raises before the model exists, and never yields a half-loaded model.
"""

import collections
import concurrent.futures
import difflib
import re

import numpy as np

from kerasllm.models.hugging_face import (
    convert_bert,
    convert_gemma3,
    convert_gpt2,
    convert_llama,
    convert_mistral,
    convert_qwen2,
    convert_qwen3,
)
from kerasllm.models.hugging_face.config import read_config
from kerasllm.models.hugging_face.weights import hugging_face_shape, layers_by_path, target_variable, to_keras
from kerasllm.utils import deferred_variables
from kerasllm.utils.safetensors_io import SafetensorsCheckpoint

FAMILY_MODULES = (convert_gpt2, convert_llama, convert_mistral, convert_qwen2, convert_qwen3, convert_gemma3, convert_bert)
FAMILIES = {model_type: module for module in FAMILY_MODULES for model_type in module.MODEL_TYPES}
TASK_NAMES = {"causal_lm": "CausalLM", "masked_lm": "MaskedLM", "classifier": "SequenceClassifier"}
# How much may be read and converted ahead of the tensor being handed to its variables.
_PREFETCH_BYTES = 64 * 2**20


def family_of(hf_config, directory):
    """The converter module for a config's `model_type`, with a clear error for unknown ones."""
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"{directory!r}: config.json has model_type={model_type!r}, which kerasllm cannot load. Supported "
            f"model types: {sorted(FAMILIES)}."
        )
    return FAMILIES[model_type]


def read_model_config(directory, task):
    """`(family module, hf_config, kerasllm config)` for `task` ("causal_lm", "masked_lm", "classifier")."""
    hf_config = read_config(directory)
    family = family_of(hf_config, directory)
    if task not in family.TASKS:
        usable = " or ".join(f"kerasllm.models.{TASK_NAMES[t]}.from_preset" for t in family.TASKS)
        raise ValueError(
            f"{directory!r} holds a {family.NAME} model ({hf_config.get('model_type')}), which is not a "
            f"{TASK_NAMES[task]}: load it with {usable}."
        )
    try:
        config = family.to_kerasllm(hf_config)
    except KeyError as error:
        raise ValueError(
            f"{directory!r}: config.json has no {error.args[0]!r}, which a {family.NAME} config needs. Restore the "
            "checkpoint's original config.json."
        ) from None
    return family, hf_config, config


def load_weights_into_new_model(build, directory, family, config, task):
    """Builds `build(config)` with uninitialized variables and fills them from `directory`.

    Args:
        build: callable `config -> model`, called inside `deferred_variables.uninitialized_variables()`.
        directory: str. The Hugging Face model directory.
        family: the converter module.
        config: dict. The kerasllm config (possibly with user overrides).
        task: str. "causal_lm", "masked_lm" or "classifier".

    Returns:
        The model, every weight loaded.
    """
    entries = family.weights(config, task)
    with SafetensorsCheckpoint(directory) as checkpoint:
        names = set(checkpoint.keys())
        prefix = _base_prefix(family, entries, names, directory)
        with deferred_variables.uninitialized_variables():
            model = build(config)
        try:
            aliases = getattr(family, "ALIASES", ())
            plan = _plan(model, entries, prefix, checkpoint, names, family.ignored(config, task), aliases, directory)

            def prepare(step):  # read, lay out and cast one tensor: NumPy and the reads release the GIL
                name, variables, layout = step
                array = checkpoint.get(name)
                return to_keras(array, layout, [v.shape for v in variables], dtype=variables[0].dtype)

            # Tensors are prepared ahead on other threads while this one hands values to variables: at
            # most two, and beyond the next one only while they fit in _PREFETCH_BYTES (memory stays near
            # the model's size).
            def nbytes(step):
                return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in step[1])

            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                pending, submitted = collections.deque(), 0
                for _, variables, _ in plan:
                    while submitted < len(plan) and (
                        not pending
                        or len(pending) < 2 and sum(b for _, b in pending) + nbytes(plan[submitted]) <= _PREFETCH_BYTES
                    ):
                        pending.append((pool.submit(prepare, plan[submitted]), nbytes(plan[submitted])))
                        submitted += 1
                    values = pending.popleft()[0].result()
                    for variable, value in zip(variables, values):
                        deferred_variables.initialize(variable, value)
                    del values
            # What the checkpoint does not hold: optional heads, dropout's seed state.
            for variable in model.variables:
                if not deferred_variables.is_initialized(variable):
                    deferred_variables.initialize(variable)
        except BaseException:
            deferred_variables.discard(model.variables)
            raise
    return model


def _base_prefix(family, entries, names, directory):
    probe = next(entry.name for entry in entries if not entry.head)
    for prefix in family.BASE_PREFIXES:
        if prefix + probe in names:
            return prefix
    sample = sorted(names)[:5]
    raise ValueError(
        f"{directory!r}: the checkpoint has no {family.NAME} embedding tensor (looked for "
        f"{[p + probe for p in family.BASE_PREFIXES]}); its tensors start with {sample}. Is config.json's "
        "model_type right for these weights?"
    )


def _plan(model, entries, prefix, checkpoint, names, ignored, aliases, directory):
    """`[(tensor name, [variables], layout)]` after checking every name and shape; raises first.

    `aliases` are `(pattern, replacement)` pairs giving the older name of a tensor (e.g. BERT's
    `LayerNorm.gamma` for `LayerNorm.weight`), tried when the name itself is absent.
    """
    layers = layers_by_path(model)
    plan, used, missing, wrong = [], set(), [], []
    for entry in entries:
        name = entry.name if entry.head else prefix + entry.name
        if name not in names:
            name = next((alt for alt in (re.sub(p, r, name) for p, r in aliases) if alt in names), name)
        variables = [target_variable(layers, path, attribute) for path, attribute in entry.targets]
        if name not in names:
            if not entry.optional:
                missing.append(name)
            continue
        expected = hugging_face_shape([tuple(v.shape) for v in variables], entry.layout)
        actual = tuple(checkpoint.shape(name))
        if actual != expected:
            wrong.append(
                f"{name} in {checkpoint.file_of(name)} has shape {actual}, but config.json implies {expected} "
                f"(for {', '.join(path or 'the model' for path, _ in entry.targets)})"
            )
        used.add(name)
        plan.append((name, variables, entry.layout))
    if wrong:
        raise ValueError(f"{directory!r}: tensors of the wrong shape; config.json and the weights disagree:\n  " + "\n  ".join(wrong))
    if missing:
        hints = [f"{name} (closest: {difflib.get_close_matches(name, names, 1, 0.6) or 'none'})" for name in missing[:5]]
        raise ValueError(
            f"{directory!r}: the checkpoint lacks {len(missing)} tensor(s) that config.json implies, e.g. "
            f"{hints}. A missing bias or norm usually means config.json does not describe these weights "
            "(e.g. a wrong attention_bias or model_type), or a shard was not downloaded."
        )
    patterns = [re.compile(pattern) for pattern in ignored]
    unexpected = sorted(n for n in names - used if not any(p.fullmatch(n) for p in patterns))
    if unexpected:
        raise ValueError(
            f"{directory!r}: the checkpoint has {len(unexpected)} tensor(s) the model built from config.json has "
            f"no place for, e.g. {unexpected[:5]}. They usually belong to a config option kerasllm does not "
            "support; loading without them would give a different model."
        )
    return plan
