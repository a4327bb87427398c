"""Feature distillation losses: hidden states and attention relations, in float32.

These compare what happens inside the teacher and the student rather than their outputs. Masking
follows `kerasllm.losses.distillation`: `mask` (bool, `(B, T)`) says which positions count, and a
batch with nothing counted gives 0, not NaN.
"""

import math

from keras import ops

_MASKED = -1e9  # stands for -inf in a softmax; finite, so `0 * (masked - masked)` stays 0, not NaN


def hidden_state_mse(teacher_hidden, student_hidden, mask=None):
    """Mean squared difference of hidden states `(B, T, C)`, averaged over channels and counted positions.

    The student's states must already have the teacher's width (the `Distillation` callback projects
    them with a learned `Dense`).

    Args:
        teacher_hidden: float tensor `(B, T, C)`. Targets.
        student_hidden: float tensor `(B, T, C)`. Predictions.
        mask: optional bool tensor `(B, T)`. Positions that count. Defaults to all.

    Returns:
        A float32 scalar.

    Example:

    >>> loss = kerasllm.losses.feature_distillation.hidden_state_mse(teacher_h, projection(student_h))
    """
    _check_same_positions(teacher_hidden, student_hidden, "hidden states")
    if teacher_hidden.shape[-1] is not None and student_hidden.shape[-1] is not None:
        if teacher_hidden.shape[-1] != student_hidden.shape[-1]:
            raise ValueError(
                f"Hidden states must have the same width, but the teacher's are {teacher_hidden.shape[-1]} wide "
                f"and the student's {student_hidden.shape[-1]}. Project the student's states first (the "
                "Distillation callback does this with `features=...`)."
            )
    diff = ops.cast(student_hidden, "float32") - ops.cast(teacher_hidden, "float32")
    per_position = ops.mean(ops.square(diff), axis=-1)  # (B, T)
    return _masked_mean(per_position, mask)


def attention_relation_kl(teacher_states, student_states, num_relation_heads, mask=None, causal=False):
    """MiniLM-v2 self-attention relation transfer: KL between the teacher's and student's relations.

    Each input `(B, T, C)` (e.g. the queries, keys or values of one attention layer, before the heads are
    split) is cut into `num_relation_heads` equal slices; within each slice the relation of position `i`
    to position `j` is `softmax_j(x_i . x_j / sqrt(d))`, with `d` the slice width. The loss is
    `KL(teacher relation || student relation)`, summed over `j`, averaged over relation heads and over
    the counted query positions. Teacher and student may have different widths and head counts: only
    `num_relation_heads` must divide both widths.

    Args:
        teacher_states: float tensor `(B, T, C_teacher)`.
        student_states: float tensor `(B, T, C_student)`.
        num_relation_heads: int. Slices the states are cut into.
        mask: optional bool tensor `(B, T)`. Positions that count, as queries and as keys. Defaults to all.
        causal: bool. Relate position `i` only to positions `j <= i` (decoder models). Defaults to `False`.

    Returns:
        A float32 scalar.

    Example:

    >>> loss = kerasllm.losses.feature_distillation.attention_relation_kl(
    ...     teacher_queries, student_queries, num_relation_heads=4, causal=True)

    References:
        - [Wang et al., 2021, MiniLMv2: Multi-Head Self-Attention Relation Distillation](https://arxiv.org/abs/2012.15828)
    """
    _check_same_positions(teacher_states, student_states, "attention states")
    teacher_log = _relation_log_probs(teacher_states, num_relation_heads, mask, causal, "teacher")
    student_log = _relation_log_probs(student_states, num_relation_heads, mask, causal, "student")
    per_query = ops.sum(ops.exp(teacher_log) * (teacher_log - student_log), axis=-1)  # (B, R, T)
    per_position = ops.mean(per_query, axis=1)  # (B, T)
    return _masked_mean(per_position, mask)


def _relation_log_probs(states, num_heads, mask, causal, who):
    width = states.shape[-1]
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"`num_relation_heads` must be a positive integer, but got {num_heads!r}.")
    if width % num_heads:
        raise ValueError(
            f"`num_relation_heads` ({num_heads}) must divide the {who}'s width ({width}); pick a common "
            "divisor of the teacher's and the student's widths."
        )
    states = ops.cast(states, "float32")
    batch, length = ops.shape(states)[0], ops.shape(states)[1]
    depth = width // num_heads
    heads = ops.transpose(ops.reshape(states, (batch, length, num_heads, depth)), (0, 2, 1, 3))  # (B, R, T, d)
    scores = ops.matmul(heads, ops.transpose(heads, (0, 1, 3, 2))) / math.sqrt(depth)  # (B, R, T, T)
    allowed = None
    if causal:
        allowed = ops.tril(ops.ones((length, length), dtype="bool"))[None, None]
    if mask is not None:
        keys = ops.cast(mask, "bool")[:, None, None, :]
        # A query that may see no key at all (a padded position) keeps itself, so its row stays finite.
        keys = ops.logical_or(keys, ops.eye(length, dtype="bool")[None, None])
        allowed = keys if allowed is None else ops.logical_and(allowed, keys)
    if allowed is not None:
        scores = ops.where(allowed, scores, _MASKED)
    return scores - ops.logsumexp(scores, axis=-1, keepdims=True)


def _masked_mean(per_position, mask):
    if mask is None:
        return ops.mean(per_position)
    weights = ops.cast(mask, "float32")
    return ops.divide_no_nan(ops.sum(per_position * weights), ops.sum(weights))


def _check_same_positions(teacher, student, what):
    teacher_shape, student_shape = tuple(teacher.shape), tuple(student.shape)
    if len(teacher_shape) != 3 or len(student_shape) != 3:
        raise ValueError(
            f"Teacher and student {what} must have shape (batch, sequence, width); got {teacher_shape} and "
            f"{student_shape}."
        )
    for axis, (t, s) in enumerate(zip(teacher_shape[:2], student_shape[:2])):
        if t is not None and s is not None and t != s:
            raise ValueError(
                f"Teacher and student {what} differ on axis {axis} (batch or sequence length): "
                f"{teacher_shape} and {student_shape}. Feed both the same batch."
            )
