"""Token-level cross-entropy from logits, shared by the language-model losses and metrics."""

from keras import ops

IGNORE_INDEX = -100


def sparse_cross_entropy(labels, logits, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
    """Per-token cross-entropy between integer labels and logits, in float32.

    Computes `logsumexp(logits) - logits[label]` without building a one-hot tensor, so it stays cheap
    for large vocabularies. Positions whose label equals `ignore_index` get a loss of 0 and are `False`
    in the returned mask. Ignored labels are replaced by 0 before the gather, because JAX silently
    returns garbage for out-of-range indices and torch/TensorFlow raise.

    Args:
        labels: int tensor of shape `(B, T)` (or `(B, T, 1)`). Target token ids; `ignore_index` marks
            positions that do not count.
        logits: float tensor of shape `(B, T, V)`, any float dtype (bfloat16/float16 are upcast).
        ignore_index: int. Label value to ignore. Defaults to `-100`.
        label_smoothing: float in `[0, 1)`. Mixes the one-hot target with a uniform distribution over
            the vocabulary, as in `keras.losses.CategoricalCrossentropy`. Defaults to `0.0`.

    Returns:
        A tuple `(per_token_loss, mask)`: `per_token_loss` is a float32 tensor of shape `(B, T)`, zero
        at ignored positions; `mask` is a bool tensor of shape `(B, T)`, `True` where the label counts.

    Example:

    >>> labels = np.array([[1, -100]])
    >>> logits = np.zeros((1, 2, 4), "float32")
    >>> loss, mask = kerasllm.losses.sparse_cross_entropy(labels, logits)
    >>> # loss == [[log(4), 0.0]], mask == [[True, False]]
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1), but got {label_smoothing}.")
    logits = ops.cast(logits, "float32")  # (B, T, V)
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == len(logits.shape):
        labels = ops.squeeze(labels, axis=-1)
    labels = ops.cast(labels, "int32")  # (B, T)
    mask = ops.not_equal(labels, ignore_index)
    safe_labels = ops.where(mask, labels, 0)

    log_normalizer = ops.logsumexp(logits, axis=-1)  # (B, T)
    target_logits = ops.take_along_axis(logits, ops.expand_dims(safe_labels, axis=-1), axis=-1)
    per_token = log_normalizer - ops.squeeze(target_logits, axis=-1)
    if label_smoothing:
        # Cross-entropy against the uniform distribution: mean over the vocabulary of -log_softmax.
        uniform = log_normalizer - ops.mean(logits, axis=-1)
        per_token = (1.0 - label_smoothing) * per_token + label_smoothing * uniform
    per_token = ops.where(mask, per_token, ops.zeros_like(per_token))
    return per_token, mask
