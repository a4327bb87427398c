"""Converting a KerasHub model a user already holds into the matching kerasllm model, weight for weight.

Each supported family has one small module here (`convert_<family>.py`, as KerasHub and litgpt keep
theirs): a config map (`convert_config(backbone)`: the kerasllm architecture arguments, or a
`ValueError` for an option kerasllm cannot reproduce) and a weight map (`TOP` and `BLOCK`: kerasllm
layer path -> KerasHub layer path). This module does what every family shares: finding the backbone,
reading the normalization epsilon, walking both models' layers, reshaping KerasHub's `EinsumDense`
kernels into `Dense` kernels, and checking that every kerasllm variable receives a value and every
KerasHub weight is used. It never imports KerasHub: classes are recognized by name.
"""

import math

import numpy as np
from keras import ops

from kerasllm.models.keras_hub import (
    convert_bert,
    convert_gemma3,
    convert_gpt2,
    convert_llama,
    convert_mistral,
    convert_qwen,
    convert_qwen3,
)
from kerasllm.utils import deferred_variables

FAMILIES = (convert_gpt2, convert_llama, convert_mistral, convert_qwen, convert_qwen3, convert_gemma3, convert_bert)
# KerasHub class name -> family module, for backbones and for the task models that wrap them.
_BACKBONES = {name: family for family in FAMILIES for name in family.BACKBONES}
_TASKS = {name: family for family in FAMILIES for name in family.TASKS}
# Longest input of a converted rotary model, which KerasHub does not bound: kerasllm's limit costs
# nothing for rotary positions (no table), so it is set high. Pass `max_sequence_length` to change it.
DEFAULT_ROTARY_LENGTH = 131072


def from_keras_hub(cls, model, dtype=None, max_sequence_length=None):
    """Builds a `cls` model with the architecture and weights of a KerasHub model.

    Args:
        cls: the kerasllm model class to build (`kerasllm.models.CausalLM` or `MaskedLM`).
        model: a KerasHub task model (e.g. `keras_hub.models.LlamaCausalLM`) or its backbone.
        dtype: str or `keras.DTypePolicy`. Dtype policy of the new model. Defaults to the KerasHub
            model's.
        max_sequence_length: int. Longest input of the new model. Defaults to the size of the
            position table for learned positions (which it must equal), else `131072`, or less
            where KerasHub applies a window on one backend only (Qwen; see `convert_qwen`).

    Returns:
        A built `cls` model whose logits equal the KerasHub model's.

    Raises:
        ValueError: for a KerasHub class or option kerasllm cannot reproduce exactly, naming it and
            what is supported.

    Example:

    >>> hub_model = keras_hub.models.Llama3CausalLM.from_preset("llama3_8b_en")
    >>> model = kerasllm.models.CausalLM.from_keras_hub(hub_model)
    >>> model.generate(token_ids, max_new_tokens=32)
    """
    backbone, family = _backbone_and_family(cls, model)
    _check_plain_float(backbone)
    config = family.convert_config(backbone)
    qk_norms = getattr(family, "QK_NORM_LAYERS", ())
    config["layer_norm_epsilon"] = _norm_epsilon(backbone, family, exclude=qk_norms)
    if qk_norms:  # KerasHub may give the query/key norms their own epsilon (Qwen3: always 1e-5)
        config["qk_norm_epsilon"] = _norm_epsilon(backbone, family, only=qk_norms)
    config["max_sequence_length"] = _max_sequence_length(config, family, backbone, max_sequence_length)
    # Built without initializing its variables: each gets the KerasHub value once, no random draw first.
    with deferred_variables.uninitialized_variables():
        target = cls(**config, dtype=dtype or backbone.dtype_policy.name)
    try:
        for target_variable, source, owner in _variable_pairs(target, backbone, family, config):
            value = ops.cast(_dense_value(source, owner), target_variable.dtype)
            # A host copy: a buffer shared with the KerasHub model would be deleted under the other model
            # when either one's compiled step donates it (JAX).
            deferred_variables.initialize(target_variable, np.array(ops.convert_to_numpy(value), copy=True))
        for variable in target.variables:  # dropout's seed state
            if not deferred_variables.is_initialized(variable):
                deferred_variables.initialize(variable)
    except BaseException:
        deferred_variables.discard(target.variables)
        raise
    return target


def supported_classes():
    """The KerasHub class names `from_keras_hub` accepts (backbones and task models)."""
    return sorted(set(_BACKBONES) | set(_TASKS))


def _backbone_and_family(cls, model):
    name = type(model).__name__
    module = type(model).__module__ or ""
    if not module.startswith("keras_hub") or (name not in _BACKBONES and name not in _TASKS):
        raise ValueError(
            f"{cls.__name__}.from_keras_hub converts KerasHub models of these classes: "
            f"{', '.join(supported_classes())}; got {module}.{name}. Other families (and subclasses of "
            "these) are not supported: a model kerasllm cannot match exactly is refused."
        )
    family = _TASKS.get(name) or _BACKBONES[name]
    if family.CAUSAL != cls.causal:
        wanted = "CausalLM" if family.CAUSAL else "MaskedLM"
        raise ValueError(f"{name} is converted with kerasllm.models.{wanted}.from_keras_hub, not {cls.__name__}.")
    if name in _BACKBONES:
        return model, family
    backbone = model.backbone
    if type(backbone).__name__ not in family.BACKBONES:
        raise ValueError(f"{name} wraps a {type(backbone).__name__}; kerasllm converts it with {family.BACKBONES}.")
    extra = {id(v) for v in model.weights} - {id(v) for v in backbone.weights}
    if extra and not family.TASK_WEIGHTS:
        paths = sorted(v.path for v in model.weights if id(v) in extra)
        raise ValueError(f"{name} has weights outside its backbone ({paths}), which kerasllm has no place for.")
    return backbone, family


def _check_plain_float(backbone):
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "quantization_mode", None) is not None:
            raise ValueError(
                f"KerasHub layer {layer.name!r} is quantized ({layer.quantization_mode}). Convert the float model "
                "and quantize the kerasllm model after (`model.quantize(...)`)."
            )
        if getattr(layer, "lora_enabled", False):
            raise ValueError(
                f"KerasHub layer {layer.name!r} has LoRA adapters. Convert the base model and enable LoRA on the "
                "kerasllm model after (`model.enable_lora(...)`)."
            )


def _norm_epsilon(backbone, family, exclude=(), only=None):
    """The one epsilon of the normalization layers (kerasllm has one `layer_norm_epsilon`, and one
    `qk_norm_epsilon`): those whose path holds none of `exclude`, or one of `only`."""
    found = {}
    for path, layer in _named_layers(backbone):
        if any(name in path for name in exclude) or (only is not None and not any(name in path for name in only)):
            continue
        if "norm" in type(layer).__name__.lower() and hasattr(layer, "epsilon"):
            if type(layer).__name__ not in family.NORMS:
                raise ValueError(
                    f"{path} is a {type(layer).__name__}; kerasllm converts {family.BACKBONES} with "
                    f"{family.NORMS} only."
                )
            found.setdefault(float(layer.epsilon), []).append(path)
    if len(found) != 1:
        detail = "; ".join(f"epsilon {eps:g} in {paths[:2]}{' ...' if len(paths) > 2 else ''}" for eps, paths in found.items())
        raise ValueError(
            f"The normalization layers of this {type(backbone).__name__} use different epsilons ({detail}). kerasllm "
            f"models have a single `layer_norm_epsilon` for every norm{family.EPSILON_HINT}, so the model cannot "
            "be reproduced exactly and is refused."
        )
    return next(iter(found))


def _max_sequence_length(config, family, backbone, requested):
    if config.get("position_embedding") == "learned":
        table = config["max_sequence_length"]
        if requested not in (None, table):
            raise ValueError(
                f"This {type(backbone).__name__} has a table of {table} learned positions; max_sequence_length "
                f"must be {table} (or None), got {requested}."
            )
        return table
    limit, reason = getattr(family, "max_length_limit", lambda backbone: (None, None))(backbone)
    if requested is None:
        return DEFAULT_ROTARY_LENGTH if limit is None else min(DEFAULT_ROTARY_LENGTH, limit)
    if limit is not None and requested > limit:
        raise ValueError(f"max_sequence_length={requested} is over {limit}: {reason}")
    return requested


# --- weights --------------------------------------------------------------------------------------


def _named_layers(root):
    """`[(path, layer)]` for every sublayer under `root`, paths joined by `/` from `root` down."""
    found = []

    def walk(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}{child.name}"
            found.append((path, child))
            walk(child, path + "/")

    walk(root, "")
    return found


def _named_variables(root):
    """`{path: (variable, owner layer)}` for the variables under `root`, each once (first path wins)."""
    found, seen = {}, set()
    for path, layer in [("", root)] + _named_layers(root):
        for variable in list(layer._trainable_variables) + list(layer._non_trainable_variables):
            if id(variable) not in seen:
                seen.add(id(variable))
                found[f"{path}/{variable.name}" if path else variable.name] = (variable, layer)
    missed = [v.path for v in root.weights if id(v) not in seen]
    if missed:
        raise ValueError(f"Variables not reachable through {root.name}'s layers: {missed}.")
    return found


def _weight_map(family, config):
    """kerasllm layer or variable path -> KerasHub path, blocks expanded."""
    mapping = dict(family.TOP)
    for i in range(config["num_layers"]):
        target, source = family.BLOCK_PREFIX
        for name, hub_name in family.BLOCK.items():
            mapping[f"{target.format(i=i)}/{name}"] = f"{source.format(i=i)}/{hub_name}"
    return mapping


def _variable_pairs(target, backbone, family, config):
    """`[(kerasllm variable, KerasHub variable, its layer)]` covering every variable of both models, checked
    (names and shapes) before anything is copied; or a `ValueError`."""
    targets = _named_variables(target)
    sources = _named_variables(backbone)
    mapping = _weight_map(family, config)
    pairs, used, unassigned = [], set(), []
    for path, (variable, _) in targets.items():
        layer_path, name = path.rsplit("/", 1) if "/" in path else ("", path)
        if path in mapping:
            source_path = mapping[path]
        elif layer_path in mapping:
            source_path = f"{mapping[layer_path]}/{name}"
        else:
            unassigned.append(path)
            continue
        if source_path not in sources:
            raise ValueError(
                f"kerasllm variable {path} maps to KerasHub {source_path}, which this {type(backbone).__name__} "
                "does not have (a kerasllm option the conversion set does not match the KerasHub model)."
            )
        source, owner = sources[source_path]
        if _dense_layout(source, owner)[1] != tuple(variable.shape):
            raise ValueError(
                f"KerasHub {source_path} {tuple(source.shape)} does not fit kerasllm {path} {tuple(variable.shape)}."
            )
        used.add(source_path)
        pairs.append((variable, source, owner))
    if unassigned:
        raise ValueError(f"No KerasHub weight for kerasllm variables {unassigned}: the conversion is incomplete.")
    unused = sorted(set(sources) - used)
    if unused:
        raise ValueError(
            f"KerasHub weights {unused} have no place in the kerasllm model; converting would drop them, so it "
            "is refused."
        )
    return pairs


def _dense_layout(variable, owner):
    """`(permutation, shape)` that lay a KerasHub variable out as kerasllm's: a `Dense` kernel `(in, out)`
    or bias `(out,)` when `owner` is an `EinsumDense` (KerasHub keeps heads as separate axes), else as is."""
    shape = tuple(variable.shape)
    if "EinsumDense" not in [c.__name__ for c in type(owner).__mro__]:
        return None, shape
    inputs, output = owner.equation.split("->")
    lhs, kernel = inputs.split(",")
    if variable.name == "bias":
        return None, (math.prod(shape),)  # the bias follows the output axes, in the output's order
    in_axes = [axis for axis in lhs if axis in kernel]
    out_axes = [axis for axis in output if axis in kernel]
    if variable.name != "kernel" or sorted(in_axes + out_axes) != sorted(kernel):
        raise ValueError(f"Unsupported variable {variable.name!r} of EinsumDense {owner.name} ({owner.equation!r}).")
    # Heads become contiguous blocks of the flat axis (head-major), as kerasllm splits them.
    permutation = [kernel.index(axis) for axis in in_axes + out_axes]
    permuted = [shape[axis] for axis in permutation]
    return permutation, (math.prod(permuted[: len(in_axes)]), math.prod(permuted[len(in_axes) :]))


def _dense_value(variable, owner):
    permutation, shape = _dense_layout(variable, owner)
    value = variable.value
    if permutation is not None:
        value = ops.transpose(value, permutation)
    return ops.reshape(value, shape)
