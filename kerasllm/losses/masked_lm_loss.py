"""Cross-entropy over the masked positions of a masked language model."""

import keras

from kerasllm.losses.causal_lm_loss import CausalLMLoss
from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX


@keras.saving.register_keras_serializable(package="kerasllm")
class MaskedLMLoss(CausalLMLoss):
    """Cross-entropy for masked language modelling, averaged over the masked positions.

    Only the positions the data pipeline masked carry a label; every other position is labelled
    `ignore_index` and does not count. The math is the one of `kerasllm.losses.CausalLMLoss`; the class
    exists so that models, logs and saved configs say which objective was trained.

    Args:
        ignore_index: int. Label value of positions that were not masked. Defaults to `-100`.
        label_smoothing: float in `[0, 1)`. Label smoothing towards the uniform distribution over the
            vocabulary. Defaults to `0.0`.
        reduction: str. Keras loss reduction, see `kerasllm.losses.CausalLMLoss`. Defaults to
            `"sum_over_batch_size"` (mean over masked positions).
        name: str. Name of the loss. Defaults to `"masked_lm_loss"`.
        dtype: str or `keras.DTypePolicy`. Dtype Keras converts the inputs to; the loss itself runs in
            float32. Defaults to `None`.

    Call arguments:
        y_true: int tensor of shape `(B, T)`. Original token ids at masked positions, `ignore_index`
            elsewhere.
        y_pred: float tensor of shape `(B, T, V)`. Logits.
        sample_weight: optional float tensor of shape `(B,)` or `(B, T)`.

    Returns:
        A scalar float32 tensor (or `(B, T)` with `reduction="none"`).

    Example:

    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.MaskedLMLoss(),
    ...               metrics=[kerasllm.metrics.MaskedAccuracy()])
    """

    def __init__(
        self,
        ignore_index=IGNORE_INDEX,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="masked_lm_loss",
        dtype=None,
    ):
        super().__init__(
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
