"""Next-token (or masked-token) accuracy over the positions that carry a label."""

import keras
from keras import ops

from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX
from kerasllm.metrics.perplexity import token_weights


@keras.saving.register_keras_serializable(package="kerasllm")
class MaskedAccuracy(keras.metrics.Metric):
    """Argmax accuracy over the tokens whose label is not `ignore_index`.

    Keras's `SparseCategoricalAccuracy` would count padding and unmasked positions; this metric only
    counts positions that carry a label, so it is the accuracy of a causal LM on real tokens or of a
    masked LM on masked positions.

    Args:
        ignore_index: int. Label value of positions to ignore. Defaults to `-100`.
        name: str. Name of the metric. Defaults to `"token_accuracy"`.
        dtype: str. Dtype of the result. Defaults to `None` (`keras.backend.floatx()`).

    Call arguments:
        y_true: int tensor of shape `(B, T)`. Labels.
        y_pred: float tensor of shape `(B, T, V)`. Logits or probabilities.
        sample_weight: optional float tensor of shape `(B,)` or `(B, T)`.

    Returns:
        `result()` is a scalar in `[0, 1]`: weighted correct tokens over weighted counted tokens (0
        before any token was counted).

    Example:

    >>> metric = kerasllm.metrics.MaskedAccuracy()
    >>> metric.update_state(np.array([[2, -100]]), np.eye(4, dtype="float32")[[[2, 0]]])
    >>> float(metric.result())
    1.0
    """

    def __init__(self, ignore_index=IGNORE_INDEX, name="token_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = int(ignore_index)
        self.correct = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="correct")
        self.token_count = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="token_count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.convert_to_tensor(y_true)
        if len(labels.shape) == len(y_pred.shape):
            labels = ops.squeeze(labels, axis=-1)
        labels = ops.cast(labels, "int32")  # (B, T)
        mask = ops.not_equal(labels, self.ignore_index)
        predictions = ops.cast(ops.argmax(y_pred, axis=-1), "int32")  # (B, T)
        hits = ops.cast(ops.equal(predictions, labels), "float32")
        weights = token_weights(mask, sample_weight)
        self.correct.assign_add(ops.sum(hits * weights))
        self.token_count.assign_add(ops.sum(weights))

    def result(self):
        return ops.cast(ops.divide_no_nan(self.correct, self.token_count), self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"ignore_index": self.ignore_index})
        return config
