"""Settings checks and small tensor helpers of `kerasllm.callbacks.Distillation`."""

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

