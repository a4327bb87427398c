"""The usual LLM pre-training optimizer: AdamW, linear warmup, cosine decay, clipping, no-decay groups."""

import keras

from kerasllm.optimizers.adamw import AdamW
from kerasllm.optimizers.schedules import WarmupCosineDecay

DEFAULT_NO_DECAY = ("bias", "norm", "embedding")


def _check_positive_int(value, name, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, but got {value!r}.")


def create_optimizer(
    learning_rate=1e-3,
    total_steps=None,
    warmup_steps=None,
    warmup_fraction=0.05,
    min_learning_rate_ratio=0.1,
    weight_decay=0.1,
    beta_1=0.9,
    beta_2=0.95,
    global_clipnorm=1.0,
    gradient_accumulation_steps=None,
    no_decay=DEFAULT_NO_DECAY,
):
    """Creates a `kerasllm.optimizers.AdamW` with the usual LLM training recipe.

    The learning rate starts at 0, rises linearly to `learning_rate` over the warmup, then follows a
    cosine down to `learning_rate * min_learning_rate_ratio` at `total_steps` and stays there
    (`kerasllm.optimizers.WarmupCosineDecay`: Keras's `CosineDecay` with `warmup_target`, safe to read
    eagerly on JAX). Without `total_steps` the learning rate is constant. Variables whose name or path contains any of `no_decay` get no weight decay.

    Schedules count `fit` batches (the optimizer's raw iteration counter), also when gradients are
    accumulated: give `total_steps` and `warmup_steps` in batches.

    Args:
        learning_rate: float. Peak learning rate. Defaults to `1e-3`.
        total_steps: int. Training length in batches; enables warmup and cosine decay. Defaults to
            `None` (constant learning rate).
        warmup_steps: int. Warmup length in batches, `< total_steps`. Defaults to `None`
            (`round(warmup_fraction * total_steps)`).
        warmup_fraction: float in `[0, 1)`. Warmup length as a fraction of `total_steps`, used when
            `warmup_steps` is `None`. Defaults to `0.05`.
        min_learning_rate_ratio: float in `[0, 1]`. Final learning rate over peak learning rate.
            Defaults to `0.1`.
        weight_decay: float. Decoupled weight decay. Defaults to `0.1`.
        beta_1: float. Adam first-moment decay. Defaults to `0.9`.
        beta_2: float. Adam second-moment decay. Defaults to `0.95`.
        global_clipnorm: float. Clip the global gradient norm to this value; `None` disables.
            Defaults to `1.0`.
        gradient_accumulation_steps: int. Average the gradients of this many batches per update
            (Keras's `gradient_accumulation_steps`); `None` or 1 disables. Defaults to `None`.
        no_decay: tuple of str. Case-insensitive substrings of variable names or paths excluded from
            weight decay. Defaults to `("bias", "norm", "embedding")`.

    Returns:
        A `kerasllm.optimizers.AdamW`.

    Example:

    >>> optimizer = kerasllm.optimizers.create_optimizer(
    ...     learning_rate=6e-4, total_steps=5000, warmup_steps=200)
    >>> model.compile(optimizer=optimizer, loss=kerasllm.losses.CausalLMLoss())
    """
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be a positive number, but got {learning_rate!r}.")
    _check_positive_int(total_steps, "total_steps")
    if warmup_steps is not None and (
        isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0
    ):
        raise ValueError(f"`warmup_steps` must be a non-negative integer or None, but got {warmup_steps!r}.")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"`warmup_fraction` must be in [0, 1), but got {warmup_fraction!r}.")
    if not 0.0 <= min_learning_rate_ratio <= 1.0:
        raise ValueError(f"`min_learning_rate_ratio` must be in [0, 1], but got {min_learning_rate_ratio!r}.")
    if weight_decay is None or weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0 (0 disables it), but got {weight_decay!r}.")
    for value, name in ((beta_1, "beta_1"), (beta_2, "beta_2")):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), but got {value!r}.")
    if global_clipnorm is not None and global_clipnorm <= 0:
        raise ValueError(f"`global_clipnorm` must be > 0 or None, but got {global_clipnorm!r}.")
    _check_positive_int(gradient_accumulation_steps, "gradient_accumulation_steps")
    if isinstance(no_decay, str):
        no_decay = (no_decay,)

    if total_steps is None:
        if warmup_steps:
            raise ValueError(
                f"`warmup_steps={warmup_steps}` needs `total_steps`: the warmup is part of the cosine "
                "schedule. Pass `total_steps` (number of training batches), or drop `warmup_steps` for a "
                "constant learning rate."
            )
        schedule = float(learning_rate)
    else:
        if warmup_steps is None:
            warmup_steps = int(round(warmup_fraction * total_steps))
        if warmup_steps >= total_steps:
            raise ValueError(
                f"`warmup_steps` ({warmup_steps}) must be smaller than `total_steps` ({total_steps}), "
                "leaving at least one step of cosine decay."
            )
        schedule = WarmupCosineDecay(
            initial_learning_rate=0.0,
            decay_steps=total_steps - warmup_steps,
            alpha=float(min_learning_rate_ratio),
            warmup_target=float(learning_rate),
            warmup_steps=warmup_steps,
        )

    return AdamW(
        learning_rate=schedule,
        weight_decay=float(weight_decay),
        beta_1=beta_1,
        beta_2=beta_2,
        global_clipnorm=global_clipnorm,
        gradient_accumulation_steps=gradient_accumulation_steps if gradient_accumulation_steps != 1 else None,
        no_decay=tuple(no_decay) if no_decay else None,
    )
