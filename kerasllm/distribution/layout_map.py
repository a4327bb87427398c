"""Layout maps: how each weight of a model is split over the `"model"` axis of a device mesh.

Two builders, both returning a `keras.distribution.LayoutMap` keyed by regexes on variable paths:
`get_layout_map` (Megatron-style rules for kerasllm models, also reached through
`model.get_layout_map(device_mesh)`) and `auto_layout_map` (from weight shapes, for any Keras model).
Both refuse to leave a large weight replicated by accident: the error names the weight, instead of an
out-of-memory error far from its cause.
"""

import math
import re

import keras

# Weights with more elements than this must be sharded by some rule (about 4 MB in float32).
DEFAULT_MAX_REPLICATED_SIZE = 2**20

_BLOCK = r".*backbone/block_\d+/"
# Column-parallel: the output axis is split; each device holds whole heads / whole FFN columns.
_COLUMN_LAYERS = {
    "query": _BLOCK + r"attention/query/",
    "key_value": _BLOCK + r"attention/(key|value)/",
    "ffn_in": _BLOCK + r"feedforward/(intermediate|gate)/",
}
# Row-parallel: the input axis is split, so the column-parallel outputs feed them without a gather.
_ROW_LAYERS = {
    "attention_output": _BLOCK + r"attention/output/",
    "ffn_out": _BLOCK + r"feedforward/output/",
}


def _kerasllm_backbone(model):
    from kerasllm.models.transformer_backbone import TransformerBackbone

    if isinstance(model, TransformerBackbone):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, TransformerBackbone):
        return backbone
    raise ValueError(
        f"`get_layout_map` knows kerasllm models (CausalLM, MaskedLM, SequenceClassifier, "
        f"TransformerBackbone), got a {type(model).__name__}. For any other Keras model use "
        "`kerasllm.distribution.auto_layout_map(model, device_mesh)`."
    )


def _mesh_axis_size(device_mesh, name, argument):
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            f"device_mesh must be a `keras.distribution.DeviceMesh`, got a {type(device_mesh).__name__}. Build one "
            "with `keras.distribution.DeviceMesh(shape=(2, 4), axis_names=('batch', 'model'), "
            "devices=keras.distribution.list_devices())`."
        )
    if name not in device_mesh.axis_names:
        raise ValueError(
            f"{argument}={name!r} is not an axis of the device mesh, whose axes are "
            f"{tuple(device_mesh.axis_names)}. Pass {argument} set to one of them, or build the mesh with "
            f"axis_names including {name!r}."
        )
    return device_mesh.shape[list(device_mesh.axis_names).index(name)]


def _check_divides(model_size, count, what, fix):
    if count % model_size:
        raise ValueError(
            f"The mesh's model dimension ({model_size}) does not divide {what}={count}, so it cannot be split "
            f"evenly across devices. Use a model dimension that divides {count} (e.g. "
            f"`kerasllm.distribution.model_parallel(model, model_dim={math.gcd(model_size, count)})` or a mesh of "
            f"that shape), or {fix}."
        )


def get_layout_map(
    model,
    device_mesh,
    model_parallel_dim_name="model",
    data_parallel_dim_name="batch",
    max_replicated_size=DEFAULT_MAX_REPLICATED_SIZE,
):
    """Megatron-style layout map for a kerasllm model.

    Query, key, value, FFN intermediate and gate kernels are column-parallel (`(None, "model")`, biases
    `("model",)`): each device holds whole heads (grouped-query key/value heads included) and whole FFN
    columns. Attention-output and FFN-output kernels are row-parallel (`("model", None)`, biases
    replicated), so one reduction per sub-block joins the shards. The token embedding and an untied
    `lm_head` are split over the vocabulary; norms, the position embedding and a classification head are
    replicated. LoRA adapters, int8 kernels and their scales, and pruning masks follow the kernel they
    belong to. Weights are replicated over the data-parallel axis.

    Args:
        model: a `kerasllm.models.CausalLM`, `MaskedLM`, `SequenceClassifier` or `TransformerBackbone`.
        device_mesh: `keras.distribution.DeviceMesh`. The mesh the weights are split over.
        model_parallel_dim_name: str. Mesh axis that weights are split along. Defaults to `"model"`.
        data_parallel_dim_name: str. Mesh axis that the batch is split along; weights are replicated along
            it. Must name an axis of the mesh. Defaults to `"batch"`.
        max_replicated_size: int. A weight with more elements than this that no rule covers raises an
            error. Defaults to `2**20`.

    Returns:
        A `keras.distribution.LayoutMap`.

    Raises:
        ValueError: if the model dimension does not divide the number of query heads, key/value heads,
            the FFN width or the vocabulary, or a large weight would stay replicated.

    Example:

    >>> mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), keras.distribution.list_devices())
    >>> layout_map = kerasllm.distribution.get_layout_map(model, mesh)
    >>> keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout_map))

    References:
        - [Shoeybi et al., 2019](https://arxiv.org/abs/1909.08053) (Megatron-LM)
    """
    backbone = _kerasllm_backbone(model)
    model_size = _mesh_axis_size(device_mesh, model_parallel_dim_name, "model_parallel_dim_name")
    _mesh_axis_size(device_mesh, data_parallel_dim_name, "data_parallel_dim_name")
    _check_divides(
        model_size, backbone.num_heads, "the number of query heads, num_heads",
        "build the model with num_heads a multiple of it",
    )
    _check_divides(
        model_size, backbone.num_key_value_heads, "the number of key/value heads, num_key_value_heads",
        "build the model with num_key_value_heads a multiple of it",
    )
    _check_divides(
        model_size, backbone.intermediate_dim, "the feed-forward width, intermediate_dim",
        "build the model with intermediate_dim a multiple of it",
    )
    _check_divides(
        model_size, backbone.vocabulary_size, "the vocabulary, vocabulary_size",
        "pad vocabulary_size up to a multiple of it (e.g. 50257 -> 50304); the extra rows are never predicted",
    )
    m = model_parallel_dim_name
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map[r".*backbone/token_embedding/embeddings"] = (m, None)  # (V, C): vocabulary-parallel
    layout_map[r".*backbone/position_embedding/embeddings"] = (None, None)
    layout_map[r".*_norm/(gamma|beta|scale)"] = (None,)
    layout_map[r".*soft_prompt/.*"] = (None, None)
    for prefix in _COLUMN_LAYERS.values():
        layout_map[prefix + r"(kernel|pruning_mask/mask)"] = (None, m)  # (C, out)
        layout_map[prefix + r"(bias|kernel_scale)"] = (m,)
        layout_map[prefix + r"lora_kernel_a"] = (None, None)  # (C, rank): small, replicated
        layout_map[prefix + r"lora_kernel_b"] = (None, m)  # (rank, out): split like the kernel's outputs
    for prefix in _ROW_LAYERS.values():
        layout_map[prefix + r"(kernel|pruning_mask/mask)"] = (m, None)  # (in, C)
        layout_map[prefix + r"(bias|kernel_scale)"] = (None,)
        layout_map[prefix + r"lora_kernel_a"] = (m, None)  # (in, rank): split like the kernel's inputs
        layout_map[prefix + r"lora_kernel_b"] = (None, None)
    layout_map[r"(.*/)?lm_head/(kernel|pruning_mask/mask)"] = (None, m)  # (C, V): vocabulary-parallel
    layout_map[r"(.*/)?lm_head/kernel_scale"] = (m,)
    layout_map[r"(.*/)?lm_head/lora_kernel_a"] = (None, None)
    layout_map[r"(.*/)?lm_head/lora_kernel_b"] = (None, m)
    layout_map[r"(.*/)?classification_head/kernel"] = (None, None)
    layout_map[r"(.*/)?classification_head/bias"] = (None,)
    check_layout_map(model, layout_map, max_replicated_size)
    return layout_map


def auto_layout_map(
    model, device_mesh, model_parallel_dim_name="model", max_replicated_size=DEFAULT_MAX_REPLICATED_SIZE
):
    """Layout map for any Keras model, from its weights' shapes.

    Each weight of rank 2 or more with more than `max_replicated_size` elements is split along its
    largest dimension that the mesh's model dimension divides; every other weight is replicated. A
    pruning mask that `kerasllm.callbacks.Pruning` adds to a kernel later gets the kernel's layout. The
    result works for any architecture but is not Megatron's pairing of column- and row-parallel layers,
    so it may communicate more than `get_layout_map`.

    Args:
        model: a built `keras.Model` (or layer).
        device_mesh: `keras.distribution.DeviceMesh`. The mesh the weights are split over.
        model_parallel_dim_name: str. Mesh axis that weights are split along. Defaults to `"model"`.
        max_replicated_size: int. Weights with more elements than this are split. Defaults to `2**20`.

    Returns:
        A `keras.distribution.LayoutMap` with one entry per weight (and per future pruning mask).

    Raises:
        ValueError: if a weight over `max_replicated_size` has no dimension the model dimension divides
            (the message names the weight), or the model has no weights yet.

    Example:

    >>> mesh = keras.distribution.DeviceMesh((1, 8), ("batch", "model"), keras.distribution.list_devices())
    >>> layout_map = kerasllm.distribution.auto_layout_map(model, mesh, max_replicated_size=4096)
    """
    model_size = _mesh_axis_size(device_mesh, model_parallel_dim_name, "model_parallel_dim_name")
    if not model.weights:
        raise ValueError(
            f"{type(model).__name__} has no weights yet, so there is nothing to lay out. Build it first "
            "(`model.build(input_shape)` or call it on a batch)."
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    too_large, masks = [], {}
    for variable in _unique_variables(model):
        shape = tuple(variable.shape)
        axes = [None] * len(shape)
        if len(shape) >= 2 and math.prod(shape) > max_replicated_size:
            divisible = [axis for axis in range(len(shape)) if shape[axis] % model_size == 0]
            if not divisible:
                too_large.append(f"{variable.path} {shape}")
            else:
                # The largest divisible dimension; on a tie the last one (the output axis of a Dense).
                axes[max(divisible, key=lambda axis: (shape[axis], axis))] = model_parallel_dim_name
        layout_map[re.escape(variable.path)] = tuple(axes)
        if variable.path.endswith("/kernel"):
            # A pruning mask (`kerasllm.callbacks.Pruning`, created later, when `fit` starts) has its
            # kernel's shape: it gets the kernel's layout instead of a full copy on every device.
            masks[re.escape(variable.path[: -len("kernel")] + "pruning_mask/mask")] = tuple(axes)
    for key, axes in masks.items():
        if key not in layout_map._layout_map:  # the mask exists already and has its own entry
            layout_map[key] = axes
    if too_large:
        raise ValueError(
            f"These weights have more than max_replicated_size={max_replicated_size} elements but no dimension "
            f"that the model dimension ({model_size}) divides, so they would be replicated on every device: "
            f"{', '.join(too_large)}. Use a model dimension that divides one of their dimensions, resize them, "
            "or raise max_replicated_size to replicate them knowingly."
        )
    return layout_map


def check_layout_map(model, layout_map, max_replicated_size=DEFAULT_MAX_REPLICATED_SIZE):
    """Checks a layout map against a model's weights before any device memory is spent.

    Args:
        model: a built `keras.Model`.
        layout_map: `keras.distribution.LayoutMap`.
        max_replicated_size: int. A weight with more elements than this must match a rule. Defaults to
            `2**20`.

    Raises:
        ValueError: naming each weight that no rule matches though it has more than
            `max_replicated_size` elements, and each weight whose layout does not fit its shape.
    """
    mesh = layout_map.device_mesh
    sizes = dict(zip(mesh.axis_names, mesh.shape))
    unmatched, misfit = [], []
    for variable in _unique_variables(model):
        shape = tuple(variable.shape)
        layout = layout_map[variable.path]
        if layout is None:
            if math.prod(shape) > max_replicated_size:
                unmatched.append(f"{variable.path} {shape}")
            continue
        axes = tuple(layout.axes)
        if len(axes) != len(shape) or any(
            name is not None and dim % sizes[name] for name, dim in zip(axes, shape)
        ):
            misfit.append(f"{variable.path} {shape} -> {axes}")
    if unmatched:
        raise ValueError(
            f"No layout rule matches these weights of more than max_replicated_size={max_replicated_size} "
            f"elements, so each device would hold a full copy: {', '.join(unmatched)}. Add a rule for them "
            "(`layout_map[regex] = (None, 'model')`), use `kerasllm.distribution.auto_layout_map`, or raise "
            "max_replicated_size to replicate them knowingly."
        )
    if misfit:
        raise ValueError(
            f"These layouts do not fit their weights (wrong rank, or a split dimension the mesh axis does not "
            f"divide): {', '.join(misfit)}. Change the mesh shape or the rule for these weights."
        )


def _unique_variables(model):
    seen, variables = set(), []
    for variable in model.weights:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables
