"""What a teacher is fed: the student's batch inputs, adapted to the teacher's input structure."""

import numpy as np
from keras import ops

from kerasllm.models.language_model import LanguageModel


def input_names(model):
    """The input names of a functional model with dict inputs (KerasHub tasks), else `None`."""
    try:
        structure = model.input
    except (AttributeError, ValueError, TypeError):
        return None
    return frozenset(structure) if isinstance(structure, dict) else None


def teacher_inputs(x, teacher, names):
    """Adapts the student's inputs `x` (ids, or a dict with `"token_ids"`) to `teacher`.

    Args:
        x: int tensor `(B, T)` or dict with `"token_ids"` and optionally `"padding_mask"` (other
            entries, e.g. a cache's teacher values, are dropped).
        teacher: the teacher `keras.Model`.
        names: `input_names(teacher)`.

    Returns:
        For a dict-input teacher (KerasHub), a dict of its inputs (a missing `padding_mask` is all
        ones); for a kerasllm model, ids or a dict of ids and padding mask; otherwise the ids.
    """
    if names is None:
        if isinstance(x, dict):
            if isinstance(teacher, LanguageModel):
                return {k: v for k, v in x.items() if k in ("token_ids", "padding_mask")}
            return x["token_ids"]
        return x
    if isinstance(x, dict):
        return {k: v for k, v in x.items() if k in names}
    inputs = {"token_ids": x}
    if "padding_mask" in names:
        # Host arrays stay host arrays: Keras refuses a call mixing NumPy arrays and tensors.
        ones_like = np.ones_like if isinstance(x, np.ndarray) else ops.ones_like
        inputs["padding_mask"] = ones_like(x, dtype="int32")
    return inputs
