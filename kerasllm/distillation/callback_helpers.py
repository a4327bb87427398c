"""Settings checks and small tensor helpers of `kerasllm.callbacks.Distillation`."""

import math

import keras
from keras import ops


def block_map(features, student_layers, teacher_layers):
    if features == "hidden_states":
        return [(i, (i + 1) * teacher_layers // student_layers - 1) for i in range(student_layers)]
    pairs = []
    for student_block, teacher_block in features.items():
        for who, index, count in (("student", student_block, student_layers), ("teacher", teacher_block, teacher_layers)):
            if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
                raise ValueError(
                    f"`features` maps blocks by index, but {index!r} is not a {who} block (it has {count})."
                )
        pairs.append((student_block % student_layers, teacher_block % teacher_layers))
    if not pairs:
        raise ValueError("`features` is an empty mapping; give {student_block: teacher_block} pairs or None.")
    return pairs


def relation_heads(requested, student, teacher):
    widths = []
    for backbone in (student, teacher):
        widths += [backbone.num_heads * backbone.head_dim, backbone.num_key_value_heads * backbone.head_dim]
    heads = requested or min(student.num_heads, teacher.num_heads)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or any(w % heads for w in widths):
        raise ValueError(
            f"`relation_heads` ({heads!r}) must be a positive integer dividing every query and key/value width "
            f"of the student and the teacher ({sorted(set(widths))}). Pass relation_heads= a common divisor."
        )
    return heads


def cached_teacher(x):
    """The `(log_probs, indices)` that `TeacherLogitsCache.attach` put in the inputs, else `None`."""
    if isinstance(x, dict) and "teacher_log_probs" in x and "teacher_indices" in x:
        return ops.cast(x["teacher_log_probs"], "float32"), x["teacher_indices"]
    return None


def check_vocabulary(teacher_vocabulary, student_vocabulary, what):
    if None not in (teacher_vocabulary, student_vocabulary) and teacher_vocabulary != student_vocabulary:
        raise ValueError(
            f"Teacher and student must share a vocabulary, but the {what} has {teacher_vocabulary} tokens and "
            f"the student {student_vocabulary}. Distil only between models trained with the same tokenizer."
        )


def padding_mask(x):
    if isinstance(x, dict) and x.get("padding_mask") is not None:
        return ops.cast(x["padding_mask"], "bool")
    return None


def check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], but got {value!r}.")


def vocabulary_size(model):
    for candidate in (model, getattr(model, "backbone", None)):
        size = getattr(candidate, "vocabulary_size", None)
        if isinstance(size, int):
            return size
    try:
        return model.output.shape[-1]
    except (AttributeError, ValueError, TypeError):
        return None


def lay_out_teacher(teacher):
    """Moves the teacher's weights onto the current `keras.distribution` (JAX), in place.

    The compiled step takes the teacher's weights as inputs (see `StepState`), and JAX cannot mix
    weights held on one device with the student's device mesh. Each teacher variable gets the layout the
    distribution gives its path, as if the teacher had been built inside the distribution: replicated
    under `DataParallel`; under `ModelParallel` split by the layout map's rules (which match a kerasllm
    teacher's paths as they match the student's) and replicated where no rule matches.
    """
    distribution = keras.distribution.distribution()
    if distribution is None or keras.backend.backend() != "jax":
        return
    layout_map = getattr(distribution, "_layout_map", None)
    if layout_map is not None:
        from kerasllm.distribution.layout_map import check_layout_map

        try:  # misfits only: a teacher weight no rule matches is replicated, as documented
            check_layout_map(teacher, layout_map, max_replicated_size=math.inf)
        except ValueError as error:
            raise ValueError(
                f"The teacher's weights do not fit the distribution's layout map, which lays out the teacher "
                f"like the student. {error} "
                "Give the teacher head counts and widths that the model dimension divides, or add rules "
                "for its weight paths to the layout map."
            ) from None
    for variable in teacher.variables:  # weights and any seed-generator state
        # Keras lays a variable out when it is created; re-assigning its value under its new layout
        # moves it (the JAX variable distributes an assigned value according to `_layout`).
        variable._layout = None
        variable._layout = distribution.get_variable_layout(variable)
        variable.assign(variable.value)
