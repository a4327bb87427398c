"""Next-token cross-entropy averaged over the tokens that carry a label."""

import keras
from keras import ops

from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX
from kerasllm.losses.sparse_cross_entropy import sparse_cross_entropy


@keras.saving.register_keras_serializable(package="kerasllm")
class CausalLMLoss(keras.losses.Loss):
    """Cross-entropy for causal language modelling, averaged over non-ignored tokens.

    The labels are already the next-token targets (the data pipeline shifts them); positions labelled
    `ignore_index` (padding) do not count. With the default reduction the result is the mean loss over
    the tokens that count, however many are ignored; a batch where every label is ignored gives 0, not
    NaN. The loss is computed in float32 whatever the dtype of the logits.

    Args:
        ignore_index: int. Label value that marks positions to ignore. Defaults to `-100`.
        label_smoothing: float in `[0, 1)`. Label smoothing towards the uniform distribution over the
            vocabulary. Defaults to `0.0`.
        reduction: str. Keras loss reduction. With `"sum_over_batch_size"` or `"mean"` the per-token
            losses are rescaled so that the result is the mean over counted tokens; with `"sum"` it is
            their sum; with `"none"` the per-token losses (zero where ignored) are returned. Defaults to
            `"sum_over_batch_size"`.
        name: str. Name of the loss. Defaults to `"causal_lm_loss"`.
        dtype: str or `keras.DTypePolicy`. Dtype Keras converts the inputs to before the loss
            (the loss itself always runs in float32). Defaults to `None` (`keras.backend.floatx()`).

    Call arguments:
        y_true: int tensor of shape `(B, T)`. Next-token labels, `ignore_index` where ignored.
        y_pred: float tensor of shape `(B, T, V)`. Logits.
        sample_weight: optional float tensor of shape `(B,)` or `(B, T)`. Weights per sequence or per
            token, applied as in Keras (the result is `sum(loss * weight) / number_of_counted_tokens`).

    Returns:
        A scalar float32 tensor (or `(B, T)` with `reduction="none"`).

    Example:

    >>> model.compile(
    ...     optimizer=kerasllm.optimizers.create_optimizer(3e-4, total_steps=1000),
    ...     loss=kerasllm.losses.CausalLMLoss(),
    ...     metrics=[kerasllm.metrics.Perplexity()],
    ... )
    """

    def __init__(
        self,
        ignore_index=IGNORE_INDEX,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="causal_lm_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), but got {label_smoothing}.")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
            # Keras would broadcast a (B,) weight against the last (T) axis; make it per sequence.
            if len(sample_weight.shape) == 1 and len(y_pred.shape) == 3:
                sample_weight = ops.expand_dims(sample_weight, axis=-1)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        per_token, mask = sparse_cross_entropy(
            y_true, y_pred, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing
        )  # (B, T)
        if self.reduction in ("sum_over_batch_size", "mean"):
            # Keras divides by B * T; rescale so the result is a mean over counted tokens, as
            # Keras's own `apply_mask` does. `divide_no_nan` turns an all-ignored batch into 0.
            float_mask = ops.cast(mask, "float32")
            total = ops.cast(ops.size(float_mask), "float32")
            valid = ops.sum(float_mask)
            per_token = per_token * ops.divide_no_nan(total, valid)
        return per_token

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ignore_index": self.ignore_index,
                "label_smoothing": self.label_smoothing,
                "dtype": self._dtype_policy.name,
            }
        )
        return config
