"""Teacher-to-student divergence of logits as a Keras loss: forward KL, reverse KL, GKD's JSD, MSE."""

import keras

from kerasllm.losses import distillation

_REDUCTIONS = {"sum_over_batch_size": "mean", "mean": "mean", "sum": "sum", "none": "none", None: "none"}


@keras.saving.register_keras_serializable(package="kerasllm")
class DistillationLoss(keras.losses.Loss):
    """Divergence between teacher and student logits, in log space, averaged over counted tokens.

    The teacher's logits are the targets (`y_true`) and the student's the predictions (`y_pred`).
    Both are divided by `temperature`, turned into log-probabilities in float32 with `logsumexp` (finite
    for logits of any size, any input dtype), compared per position, and the result is multiplied by
    `temperature ** 2`. The math is in `kerasllm.losses.distillation`; the class makes it a
    serializable object for `compile()`, `kerasllm.callbacks.Distillation` or direct use.

    Kinds:
    - `"forward_kl"`: `KL(teacher || student)`, mass-covering (Hinton et al.).
    - `"reverse_kl"`: `KL(student || teacher)`, mode-seeking (MiniLLM).
    - `"jsd"`: GKD's generalized Jensen-Shannon divergence with mixture
      `beta * P_teacher + (1 - beta) * P_student`; `beta=0` is exactly forward KL, `beta=1` reverse KL.
    - `"mse"`: mean squared logit difference over the vocabulary (the temperature cancels).

    Args:
        kind: str. `"forward_kl"`, `"reverse_kl"`, `"jsd"` or `"mse"`. Defaults to `"forward_kl"`.
        temperature: float > 0. Softening temperature. Defaults to `1.0`.
        beta: float in `[0, 1]`. Teacher weight of the `"jsd"` mixture (ignored by other kinds).
            Defaults to `0.5`.
        top_k: int. Compare only the teacher's `top_k` most likely tokens at each position and, as one
            more outcome, the total mass on all other tokens (each side's own log-probabilities over the
            whole vocabulary). Defaults to `None` (the whole vocabulary).
        reduction: str. `"sum_over_batch_size"` or `"mean"`: mean over counted positions; `"sum"`;
            `"none"`: per position, zero where masked. Defaults to `"sum_over_batch_size"`.
        name: str. Defaults to `"distillation_loss"`.
        dtype: str or `keras.DTypePolicy`. Kept for Keras compatibility; the loss always runs in
            float32. Defaults to `None`.

    Call arguments:
        y_true: float tensor `(B, T, V)`. Teacher logits.
        y_pred: float tensor `(B, T, V)`. Student logits.
        sample_weight: optional float tensor `(B,)` or `(B, T)`. Scales positions without changing how
            many count (as in `kerasllm.losses.CausalLMLoss`).
        mask: optional bool tensor `(B, T)`. Positions that count, e.g. `labels != -100` or a padding
            mask. Defaults to all positions.

    Returns:
        A float32 scalar, or `(B, T)` with `reduction="none"`.

    Example:

    >>> loss = kerasllm.losses.DistillationLoss(kind="reverse_kl", temperature=2.0)
    >>> value = loss(teacher(token_ids), student(token_ids), mask=labels != kerasllm.losses.IGNORE_INDEX)

    References:
        - [Hinton et al., 2015, Distilling the Knowledge in a Neural Network](https://arxiv.org/abs/1503.02531)
        - [Agarwal et al., 2024, On-Policy Distillation of Language Models](https://arxiv.org/abs/2306.13649)
        - [Gu et al., 2024, MiniLLM](https://arxiv.org/abs/2306.08543)
    """

    def __init__(
        self,
        kind="forward_kl",
        temperature=1.0,
        beta=0.5,
        top_k=None,
        reduction="sum_over_batch_size",
        name="distillation_loss",
        dtype=None,
    ):
        distillation.check_kind(kind)
        distillation.check_top_k(top_k)
        distillation.check_temperature(temperature)
        distillation.check_beta(beta)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {sorted(map(str, _REDUCTIONS))}, but got {reduction!r}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.kind = kind
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.top_k = top_k

    def __call__(self, y_true, y_pred, sample_weight=None, mask=None):
        return distillation.distillation_loss(
            y_true,
            y_pred,
            kind=self.kind,
            temperature=self.temperature,
            beta=self.beta,
            mask=mask,
            sample_weight=sample_weight,
            reduction=_REDUCTIONS[self.reduction],
            top_k=self.top_k,
        )

    def call(self, y_true, y_pred):
        return distillation.distillation_loss(
            y_true, y_pred, kind=self.kind, temperature=self.temperature, beta=self.beta, reduction="none",
            top_k=self.top_k,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kind": self.kind,
                "temperature": self.temperature,
                "beta": self.beta,
                "top_k": self.top_k,
                "dtype": self._dtype_policy.name,
            }
        )
        return config
