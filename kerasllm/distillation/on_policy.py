"""Student-generated continuations inside the training step, for on-policy (GKD-style) distillation."""

import keras
from keras import ops


def sample_continuations(model, token_ids, prompt_length, noise, temperature=1.0):
    """Keeps each row's first `prompt_length` tokens and samples the rest from `model`, position by position.

    Runs inside a compiled step on every backend: a fixed-length loop (`keras.ops.fori_loop`) in which
    each iteration runs the model on the whole row (no key/value cache, so any causal model works) and
    samples position `t` from its logits at `t - 1` with the Gumbel-max trick, using `noise` drawn once
    per step. The result carries no gradient.

    Args:
        model: causal `keras.Model` mapping ids `(B, T)` to logits `(B, T, V)`.
        token_ids: int tensor `(B, T)`. Rows whose prefixes are the prompts.
        prompt_length: int in `[1, T)`. Tokens kept from each row.
        noise: float tensor `(B, T - prompt_length, V)` of uniform samples in `(0, 1)`.
        temperature: float > 0. Sampling temperature. Defaults to `1.0`.

    Returns:
        int32 tensor `(B, T)`: the prompts followed by the model's samples.

    Example:

    >>> noise = keras.random.uniform((4, 32, vocabulary_size), minval=1e-6, maxval=1.0, seed=0)
    >>> samples = sample_continuations(student, token_ids[:4], prompt_length=32, noise=noise)
    """
    token_ids = ops.cast(token_ids, "int32")
    length = token_ids.shape[1]
    gumbel = -ops.log(-ops.log(ops.cast(noise, "float32")))
    positions = ops.arange(length, dtype="int32")[None, :]  # (1, T)

    def body(t, tokens):
        logits = ops.cast(model(tokens, training=False), "float32")  # (B, T, V)
        step_logits = ops.take(logits, t - 1, axis=1) / temperature  # (B, V)
        step_noise = ops.take(gumbel, t - prompt_length, axis=1)  # (B, V)
        sampled = ops.cast(ops.argmax(step_logits + step_noise, axis=-1), "int32")  # (B,)
        return ops.where(positions == t, sampled[:, None], tokens)

    return ops.stop_gradient(ops.fori_loop(prompt_length, length, body, token_ids))


def continuation_mask(batch_size, length, prompt_length):
    """Bool `(B, T)`: the positions whose next-token prediction is a sampled token."""
    positions = ops.arange(length, dtype="int32")[None, :]
    mask = ops.logical_and(positions >= prompt_length - 1, positions < length - 1)
    return ops.broadcast_to(mask, (batch_size, length))


def uniform_noise(shape, seed):
    """Uniform samples in `(0, 1)` for `sample_continuations` (never exactly 0 or 1)."""
    return keras.random.uniform(shape, minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
