"""Perplexity of a language model, accumulated over batches."""

import keras
from keras import ops

from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX
from kerasllm.losses.sparse_cross_entropy import sparse_cross_entropy


def token_weights(mask, sample_weight):
    """Float32 `(B, T)` weights: the label mask times an optional `(B,)` or `(B, T)` sample weight."""
    weights = ops.cast(mask, "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        while len(sample_weight.shape) < len(weights.shape):
            sample_weight = ops.expand_dims(sample_weight, axis=-1)
        weights = weights * sample_weight
    return weights


@keras.saving.register_keras_serializable(package="kerasllm")
class Perplexity(keras.metrics.Metric):
    """Perplexity, `exp` of the mean next-token negative log-likelihood over counted tokens.

    Sums the negative log-likelihood and the number of counted tokens over every batch seen since the
    last `reset_state()`, so the result is the perplexity of the whole epoch, not a mean of per-batch
    perplexities. Positions labelled `ignore_index` do not count. Computed in float32.

    Args:
        ignore_index: int. Label value of positions to ignore. Defaults to `-100`.
        name: str. Name of the metric. Defaults to `"perplexity"`.
        dtype: str. Dtype of the result. Defaults to `None` (`keras.backend.floatx()`).

    Call arguments:
        y_true: int tensor of shape `(B, T)`. Next-token labels.
        y_pred: float tensor of shape `(B, T, V)`. Logits.
        sample_weight: optional float tensor of shape `(B,)` or `(B, T)`. Weight of each sequence or
            token in both the summed likelihood and the token count.

    Returns:
        `result()` is a scalar: `exp(total_nll / token_count)`, or 1.0 before any token was counted.

    Example:

    >>> metric = kerasllm.metrics.Perplexity()
    >>> metric.update_state(np.array([[1, -100]]), np.zeros((1, 2, 4), "float32"))
    >>> float(metric.result())  # uniform over 4 tokens
    4.0
    """

    def __init__(self, ignore_index=IGNORE_INDEX, name="perplexity", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = int(ignore_index)
        self.total_nll = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total_nll")
        self.token_count = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="token_count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        per_token, mask = sparse_cross_entropy(y_true, y_pred, ignore_index=self.ignore_index)
        weights = token_weights(mask, sample_weight)  # (B, T)
        self.total_nll.assign_add(ops.sum(per_token * weights))
        self.token_count.assign_add(ops.sum(weights))

    def result(self):
        mean_nll = ops.divide_no_nan(self.total_nll, self.token_count)
        return ops.cast(ops.exp(mean_nll), self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"ignore_index": self.ignore_index})
        return config
