"""`student_from_teacher`: a shallower copy of a kerasllm model, DistilBERT style."""

import numpy as np
from keras import ops

from kerasllm.models.causal_lm import CausalLM
from kerasllm.models.masked_lm import MaskedLM


def student_from_teacher(teacher, num_layers, layer_indices=None, dtype=None):
    """Builds a shallower student initialised from a teacher's weights, as DistilBERT does.

    The student is a new model of the teacher's own class (`kerasllm.models.CausalLM` or
    `kerasllm.models.MaskedLM`) with the teacher's configuration except `num_layers`. Its token and
    position embeddings, final norm and output head (when untied) are copies of the teacher's, and its
    block `i` is a copy of teacher block `layer_indices[i]`. Weights are matched by layer name and
    variable path (`backbone/block_{i}/attention/query/kernel`, ...), never by position in a flat list,
    and every student weight must receive a value. The student is built, not compiled, and shares no
    storage with the teacher: training one never changes the other.

    Args:
        teacher: `kerasllm.models.CausalLM` or `kerasllm.models.MaskedLM`. A built model.
        num_layers: int. Blocks of the student, from `1` to the teacher's `num_layers - 1`.
        layer_indices: list of int. The teacher block copied into each student block: `num_layers`
            distinct indices in increasing order. Defaults to every `k`-th teacher block from block 0,
            with `k = teacher.num_layers // num_layers` (12 -> 6 takes blocks 0, 2, ..., 10).
        dtype: str or `keras.DTypePolicy`. The student's dtype policy, e.g. `"mixed_bfloat16"`.
            Defaults to the teacher's.

    Returns:
        The student, a model of the teacher's class.

    Example:

    >>> teacher = kerasllm.utils.load_model("runs/teacher/model.keras")
    >>> student = kerasllm.distillation.student_from_teacher(teacher, num_layers=2)
    >>> student.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> student.fit(train, epochs=1, callbacks=[kerasllm.callbacks.Distillation(teacher)])

    References:
        - [Sanh et al., 2019, DistilBERT, a distilled version of BERT](https://arxiv.org/abs/1910.01108)
    """
    if not isinstance(teacher, (CausalLM, MaskedLM)):
        raise ValueError(
            f"`teacher` must be a kerasllm.models.CausalLM or kerasllm.models.MaskedLM, but got "
            f"{type(teacher).__name__}. For another model, build the student yourself and copy the weights "
            "you want with `layer.set_weights(...)`, or use a kerasllm model as the teacher."
        )
    if not teacher.built:
        raise ValueError("The teacher is not built: call it once on a batch of token ids (or load a saved one) first.")
    teacher_layers = teacher.num_layers
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or not (
        1 <= num_layers < teacher_layers
    ):
        raise ValueError(
            f"`num_layers` must be an integer from 1 to {teacher_layers - 1} (the teacher has {teacher_layers} "
            f"blocks), but got {num_layers!r}. A student as deep as its teacher is a copy: use "
            "`keras.models.clone_model(teacher)` and `set_weights(teacher.get_weights())` for that."
        )
    num_layers = int(num_layers)
    if layer_indices is None:
        stride = teacher_layers // num_layers
        layer_indices = [i * stride for i in range(num_layers)]
    layer_indices = _check_layer_indices(layer_indices, num_layers, teacher_layers)

    config = teacher.get_config()
    config.pop("name", None)  # a fresh, unique model name
    config["num_layers"] = num_layers
    if config.get("layer_types"):  # local/global attention pattern (Gemma 3): the copied blocks keep theirs
        config["layer_types"] = [config["layer_types"][i] for i in layer_indices]
    if dtype is not None:
        config["dtype"] = dtype
    student = type(teacher).from_config(config)
    if not student.built:
        student.build((None, None))

    teacher_backbone, student_backbone = teacher.backbone, student.backbone
    # Everything but the blocks (embeddings, norms, heads), matched by name; then the chosen blocks.
    pairs = _sublayer_pairs(student, teacher) + _sublayer_pairs(student_backbone, teacher_backbone)
    teacher_blocks = {block.name: block for block in teacher_backbone.blocks}
    student_blocks = {block.name: block for block in student_backbone.blocks}
    for i, index in enumerate(layer_indices):
        pairs.append((student_blocks[f"block_{i}"], teacher_blocks[f"block_{index}"]))

    assigned = set()
    for student_layer, teacher_layer in pairs:
        assigned.update(_copy_layer_weights(student_layer, teacher_layer))
    if getattr(student, "logit_bias", None) is not None:  # a weight of the model itself (BERT's head bias)
        student.logit_bias.assign(np.array(ops.convert_to_numpy(teacher.logit_bias), copy=True))
        assigned.add(id(student.logit_bias))
    missing = [weight.path for weight in student.weights if id(weight) not in assigned]
    if missing:
        raise ValueError(
            f"No teacher weight for the student weights {missing}: the teacher's layers do not match its "
            "configuration. Build the student yourself and copy the weights you want."
        )
    return student


def _sublayer_pairs(student_layer, teacher_layer):
    """`(student child, teacher child)` for the direct sublayers of a model or backbone, except the
    backbone and the blocks."""
    teacher_children = {c.name: c for c in teacher_layer._flatten_layers(include_self=False, recursive=False)}
    return [
        (child, teacher_children[child.name])
        for child in student_layer._flatten_layers(include_self=False, recursive=False)
        if child.name != "backbone" and not child.name.startswith("block_")
    ]


def _check_layer_indices(layer_indices, num_layers, teacher_layers):
    if isinstance(layer_indices, (str, bytes)) or not hasattr(layer_indices, "__iter__") or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in layer_indices
    ):
        raise ValueError(f"`layer_indices` must be a list of integers, but got {layer_indices!r}.")
    indices = [int(i) for i in layer_indices]
    if len(indices) != num_layers:
        raise ValueError(
            f"`layer_indices` must name one teacher block per student block ({num_layers}), but got "
            f"{len(indices)}: {indices}. Pass {num_layers} indices or change `num_layers`."
        )
    if any(not 0 <= i < teacher_layers for i in indices):
        raise ValueError(
            f"`layer_indices` must lie in [0, {teacher_layers - 1}] (the teacher has {teacher_layers} blocks), "
            f"but got {indices}."
        )
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise ValueError(
            f"`layer_indices` must be strictly increasing, without repeats (blocks keep the teacher's order), "
            f"but got {indices}. Pass e.g. {sorted(set(indices))} with as many entries as `num_layers`."
        )
    return indices


def _relative_path(weight, layer):
    """The weight's path below `layer`, e.g. `attention/query/kernel` below `block_3`."""
    parts = weight.path.split("/")
    if layer.name not in parts:
        raise ValueError(f"The weight {weight.path!r} does not lie below the layer {layer.name!r}.")
    below = len(parts) - 1 - parts[::-1].index(layer.name)
    return "/".join(parts[below + 1 :])


def _copy_layer_weights(student_layer, teacher_layer):
    """Assigns each teacher weight to the student weight at the same relative path; returns their ids."""
    source = {_relative_path(weight, teacher_layer): weight for weight in teacher_layer.weights}
    assigned = []
    for weight in student_layer.weights:
        path = _relative_path(weight, student_layer)
        if path not in source or tuple(source[path].shape) != tuple(weight.shape):
            raise ValueError(
                f"The teacher layer {teacher_layer.name!r} has no weight {path!r} of shape {tuple(weight.shape)} "
                f"for the student's {weight.path!r}. Build the student yourself and copy the weights you want."
            )
        # A host copy: the student must not share a buffer with the teacher (torch's numpy views do).
        value = np.array(ops.convert_to_numpy(source[path].value), copy=True)
        weight.assign(ops.cast(value, weight.dtype))
        assigned.append(id(weight))
    return assigned
