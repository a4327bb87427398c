"""Distillation divergences between teacher and student logits, in log space and float32.

Every function takes teacher and student logits of shape `(..., V)` (any float dtype; computed in
float32), divides both by `temperature`, and multiplies the divergence by `temperature ** 2` so that
gradient magnitudes do not shrink as the temperature grows (Hinton et al., 2015). Probabilities are
never formed from `softmax` and then logged: log-probabilities come from `logits - logsumexp(logits)`,
which stays finite for logits of any scale.

Masking follows `kerasllm.losses.CausalLMLoss`: `mask` (bool, `(...)`) says which positions count,
`sample_weight` (`(B,)` or `(B, T)`) scales them, and the `"mean"` reduction is
`sum(loss * weight * mask) / sum(mask)`; a batch with nothing counted gives 0, not NaN.
"""

from keras import ops

from kerasllm.utils.backend_gather import take_along_last_axis

KINDS = ("forward_kl", "reverse_kl", "jsd", "mse")
REDUCTIONS = ("mean", "sum", "none")


def check_kind(kind):
    """Raises a `ValueError` unless `kind` is one of `KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"Unknown distillation loss {kind!r}. Choose one of {', '.join(map(repr, KINDS))}.")


def check_temperature(temperature):
    """Raises a `ValueError` unless `temperature` is a number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"`temperature` must be a number > 0, but got {temperature!r}.")


def check_beta(beta):
    """Raises a `ValueError` unless `beta` is a number in `[0, 1]`."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must be a number in [0, 1], but got {beta!r}.")


def check_logits(teacher_logits, student_logits):
    """Raises a `ValueError` if the two logits tensors cannot be compared position by position.

    Only dimensions known on both sides are compared, so symbolic batch or sequence sizes pass.
    """
    teacher_shape, student_shape = tuple(teacher_logits.shape), tuple(student_logits.shape)
    if len(teacher_shape) != len(student_shape):
        raise ValueError(
            f"Teacher and student logits must have the same rank; got teacher shape {teacher_shape} and "
            f"student shape {student_shape}."
        )
    t_vocab, s_vocab = teacher_shape[-1], student_shape[-1]
    if t_vocab is not None and s_vocab is not None and t_vocab != s_vocab:
        raise ValueError(
            f"Teacher and student must share a vocabulary, but the teacher's logits have {t_vocab} entries "
            f"and the student's {s_vocab} (shapes {teacher_shape} and {student_shape})."
        )
    for axis, (t, s) in enumerate(zip(teacher_shape[:-1], student_shape[:-1])):
        if t is not None and s is not None and t != s:
            raise ValueError(
                f"Teacher and student logits differ on axis {axis} (batch or sequence length): teacher "
                f"shape {teacher_shape}, student shape {student_shape}."
            )


def check_top_k(top_k):
    """Raises a `ValueError` unless `top_k` is `None` or a positive integer."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be None or a positive integer, but got {top_k!r}.")


# Kept mass is capped just below 1 so that the "rest" entry stays finite and differentiable.
_MAX_KEPT_LOG_MASS = -1e-6


def _log1mexp(x):
    """`log(1 - exp(x))` for `x < 0`, accurate at both ends (Maechler, 2012)."""
    return ops.where(x > -0.6931472, ops.log(-ops.expm1(x)), ops.log1p(-ops.exp(x)))


def with_rest(log_probs):
    """Adds the probability mass outside the kept tokens as one more entry.

    Args:
        log_probs: float tensor `(..., k)`: log-probabilities of `k` tokens, normalized over the whole
            vocabulary (so they sum to at most 1 in probability).

    Returns:
        A float32 tensor `(..., k + 1)`: the same values and `log(1 - sum(exp(log_probs)))`, the
        log-probability of "any other token". The result is a full distribution over `k + 1` outcomes.
    """
    log_probs = ops.cast(log_probs, "float32")
    kept = ops.minimum(ops.logsumexp(log_probs, axis=-1, keepdims=True), _MAX_KEPT_LOG_MASS)
    return ops.concatenate([log_probs, _log1mexp(kept)], axis=-1)


def select_top_k(teacher_logits, student_logits, top_k=None, kind="forward_kl"):
    """Checks the logits and keeps, per position, the teacher's `top_k` most likely tokens.

    For the divergences, each side becomes a distribution over `top_k + 1` outcomes: its own
    log-probabilities (normalized over the whole vocabulary) of the teacher's top-k tokens, plus one
    entry for the mass on every other token. The student is therefore still pushed to put the right total
    mass on the teacher's likely tokens, which renormalizing both sides over the top-k set would lose;
    at temperature 1 the divergence is exactly the divergence of these coarse-grained distributions (a
    lower bound of the full one). The temperature then softens the coarse distributions. For `"mse"`
    the two sides are the logits of the top-k tokens. `top_k` equal to the vocabulary is the full loss.

    Returns:
        The two tensors to compare, of shape `(..., V)` (unchanged when `top_k` is `None` or the
        vocabulary size), `(..., top_k + 1)` or, for `"mse"`, `(..., top_k)`.
    """
    check_top_k(top_k)
    check_logits(teacher_logits, student_logits)
    vocabulary = teacher_logits.shape[-1]
    if top_k is None or top_k == vocabulary:
        return teacher_logits, student_logits
    if vocabulary is not None and top_k > vocabulary:
        raise ValueError(f"`top_k` ({top_k}) is larger than the vocabulary ({vocabulary}).")
    _, indices = ops.top_k(ops.cast(teacher_logits, "float32"), k=top_k)  # (..., k)
    if kind == "mse":
        return (
            take_along_last_axis(teacher_logits, indices),
            take_along_last_axis(student_logits, indices),
        )
    return top_k_with_rest(_log_probs(teacher_logits, 1.0), _log_probs(student_logits, 1.0), indices)


def top_k_with_rest(teacher_log_probs, student_log_probs, indices):
    """Gathers `indices` (`(..., k)`) from both full log-probability tensors and adds each side's rest.

    `teacher_log_probs` may already be the gathered `(..., k)` values (as a `TeacherLogitsCache` stores
    them); `student_log_probs` is the student's full `(..., V)` log-softmax.
    """
    if teacher_log_probs.shape[-1] != indices.shape[-1]:
        teacher_log_probs = take_along_last_axis(teacher_log_probs, indices)
    student_log_probs = take_along_last_axis(student_log_probs, indices)
    return with_rest(teacher_log_probs), with_rest(student_log_probs)


def _log_probs(logits, temperature):
    logits = ops.cast(logits, "float32") / ops.cast(temperature, "float32")
    return logits - ops.logsumexp(logits, axis=-1, keepdims=True)  # (..., V)


def _kl(log_p, log_q):
    """KL(P || Q) summed over the last axis, from log-probabilities."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _reduce(per_token, mask, sample_weight, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, but got {reduction!r}.")
    weights = ops.ones_like(per_token)
    if sample_weight is not None:
        sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
        while len(sample_weight.shape) < len(per_token.shape):
            sample_weight = ops.expand_dims(sample_weight, axis=-1)  # (B,) -> (B, 1): per sequence
        weights = weights * sample_weight
    if mask is not None:
        float_mask = ops.cast(ops.convert_to_tensor(mask), "float32")
        weights = weights * float_mask
        count = ops.sum(float_mask * ops.ones_like(per_token))
    else:
        count = ops.cast(ops.size(per_token), "float32")
    per_token = per_token * weights
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return ops.sum(per_token)
    return ops.divide_no_nan(ops.sum(per_token), count)


def _finish(per_token, temperature, mask, sample_weight, reduction):
    temperature = ops.cast(temperature, "float32")
    return _reduce(per_token * ops.square(temperature), mask, sample_weight, reduction)


def forward_kl(
    teacher_logits, student_logits, temperature=1.0, mask=None, sample_weight=None, reduction="mean", top_k=None
):
    """Forward KL divergence `KL(teacher || student)` at a temperature, times `temperature ** 2`.

    Mass-covering: the student is pushed to put probability wherever the teacher does.

    Args:
        teacher_logits: float tensor of shape `(B, T, V)` (any rank `(..., V)`). Targets.
        student_logits: float tensor of the same shape. Predictions.
        temperature: float or scalar tensor > 0. Softens both distributions. Defaults to `1.0`.
        mask: optional bool tensor of shape `(B, T)`. Positions that count. Defaults to all.
        sample_weight: optional float tensor of shape `(B,)` or `(B, T)`. Defaults to `None`.
        reduction: str. `"mean"` (over counted positions), `"sum"` or `"none"` (per position, zero where
            masked). Defaults to `"mean"`.
        top_k: int. Compare only the teacher's `top_k` most likely tokens at each position and the
            total mass on all others (see `select_top_k`). Defaults to `None` (the whole vocabulary).

    Returns:
        A float32 scalar, or a `(B, T)` tensor with `reduction="none"`.

    Example:

    >>> teacher = np.random.randn(2, 5, 37)
    >>> student = np.random.randn(2, 5, 37)
    >>> loss = kerasllm.losses.distillation.forward_kl(teacher, student, temperature=2.0)
    """
    teacher_logits, student_logits = select_top_k(teacher_logits, student_logits, top_k)
    per_token = _kl(_log_probs(teacher_logits, temperature), _log_probs(student_logits, temperature))
    return _finish(per_token, temperature, mask, sample_weight, reduction)


def reverse_kl(
    teacher_logits, student_logits, temperature=1.0, mask=None, sample_weight=None, reduction="mean", top_k=None
):
    """Reverse KL divergence `KL(student || teacher)` at a temperature, times `temperature ** 2`.

    Mode-seeking: the student is pushed to avoid tokens the teacher finds unlikely (MiniLLM).
    Arguments and return value as in `kerasllm.losses.distillation.forward_kl`.

    Example:

    >>> loss = kerasllm.losses.distillation.reverse_kl(teacher_logits, student_logits, mask=labels != -100)

    References:
        - [Gu et al., 2024, MiniLLM](https://arxiv.org/abs/2306.08543)
    """
    teacher_logits, student_logits = select_top_k(teacher_logits, student_logits, top_k)
    per_token = _kl(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature))
    return _finish(per_token, temperature, mask, sample_weight, reduction)


def jsd(
    teacher_logits, student_logits, beta=0.5, temperature=1.0, mask=None, sample_weight=None, reduction="mean",
    top_k=None,
):
    """Generalized Jensen-Shannon divergence of GKD, at a temperature, times `temperature ** 2`.

    With `M = beta * P_teacher + (1 - beta) * P_student` (formed in log space with `logsumexp`), the
    divergence is `beta * KL(teacher || M) + (1 - beta) * KL(student || M)`. As in GKD and TRL, `beta=0`
    is exactly the forward KL `KL(teacher || student)` and `beta=1` the reverse KL
    `KL(student || teacher)`. In between, the value tends to `beta * KL(teacher || student)` as `beta`
    goes to 0 and to `(1 - beta) * KL(student || teacher)` as it goes to 1, so compare losses only at
    equal `beta`. `beta=0.5` is the symmetric JSD (at most `log 2` per token).

    The other arguments and the return value are those of `kerasllm.losses.distillation.forward_kl`.

    Args:
        beta: float in `[0, 1]`. Teacher weight in the mixture. Defaults to `0.5`.

    Example:

    >>> loss = kerasllm.losses.distillation.jsd(teacher_logits, student_logits, beta=0.9, temperature=2.0)

    References:
        - [Agarwal et al., 2024, On-Policy Distillation of Language Models (GKD)](https://arxiv.org/abs/2306.13649)
    """
    check_beta(beta)
    teacher_logits, student_logits = select_top_k(teacher_logits, student_logits, top_k)
    log_t = _log_probs(teacher_logits, temperature)
    log_s = _log_probs(student_logits, temperature)
    if beta == 0.0:
        per_token = _kl(log_t, log_s)
    elif beta == 1.0:
        per_token = _kl(log_s, log_t)
    else:
        log_m = ops.logsumexp(
            ops.stack([log_t + ops.log(beta), log_s + ops.log(1.0 - beta)], axis=0), axis=0
        )  # (..., V)
        per_token = beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)
    return _finish(per_token, temperature, mask, sample_weight, reduction)


def mse(
    teacher_logits, student_logits, temperature=1.0, mask=None, sample_weight=None, reduction="mean", top_k=None
):
    """Mean squared difference of the logits over the vocabulary, per position.

    Both logits are divided by `temperature` and the result multiplied by `temperature ** 2`, so the
    temperature cancels: it is accepted only so that every kind has the same signature.
    Arguments and return value as in `kerasllm.losses.distillation.forward_kl`.

    Example:

    >>> loss = kerasllm.losses.distillation.mse(teacher_logits, student_logits)
    """
    teacher_logits, student_logits = select_top_k(teacher_logits, student_logits, top_k, kind="mse")
    temperature_ = ops.cast(temperature, "float32")
    diff = (ops.cast(student_logits, "float32") - ops.cast(teacher_logits, "float32")) / temperature_
    per_token = ops.mean(ops.square(diff), axis=-1)
    return _finish(per_token, temperature, mask, sample_weight, reduction)


def distillation_loss(
    teacher_logits,
    student_logits,
    kind="forward_kl",
    temperature=1.0,
    beta=0.5,
    mask=None,
    sample_weight=None,
    reduction="mean",
    top_k=None,
):
    """Dispatches to `forward_kl`, `reverse_kl`, `jsd` (with `beta`) or `mse` by name.

    The other arguments and the return value are those of `kerasllm.losses.distillation.forward_kl`.

    Args:
        kind: str. One of `"forward_kl"`, `"reverse_kl"`, `"jsd"`, `"mse"`. Defaults to `"forward_kl"`.
        beta: float in `[0, 1]`. Used by `"jsd"` only. Defaults to `0.5`.

    Example:

    >>> loss = kerasllm.losses.distillation.distillation_loss(t, s, kind="jsd", beta=0.5, temperature=2.0)
    """
    check_kind(kind)
    kwargs = dict(
        temperature=temperature, mask=mask, sample_weight=sample_weight, reduction=reduction, top_k=top_k
    )
    if kind == "jsd":
        return jsd(teacher_logits, student_logits, beta=beta, **kwargs)
    return {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "mse": mse}[kind](
        teacher_logits, student_logits, **kwargs
    )
