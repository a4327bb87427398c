"""Next-token selection for `CausalLM.generate`: greedy, temperature, top-k and top-p, on the host
(NumPy) or on the device (`keras.ops`, inside the compiled decode loop).

Both draw their random numbers from a seeded NumPy generator on the host. The host sampler works in
float64, so a seed gives the same text on every backend; the device sampler in float32, so a seed
gives the same text on a given backend (across backends too, unless two tokens' probabilities differ
by less than float32 rounding).
"""

import numpy as np
from keras import ops


def validate_sampling(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}.")


def select_next_tokens(logits, rng, greedy=False, temperature=1.0, top_k=None, top_p=None):
    """Picks one token per row of `logits` `(B, V)`.

    Args:
        logits: NumPy array `(B, V)`.
        rng: `np.random.Generator`.
        greedy: bool. Take the argmax. Also used when `temperature == 0`.
        temperature: float. Divides the logits before sampling.
        top_k: int or None. Keep only the k most likely tokens.
        top_p: float or None. Keep the smallest set of tokens whose probability reaches `top_p`.

    Returns:
        int32 array `(B,)`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if greedy or temperature == 0:
        return logits.argmax(axis=-1).astype(np.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probabilities, axis=-1)
        sorted_probabilities = np.take_along_axis(probabilities, order, axis=-1)
        cumulative = np.cumsum(sorted_probabilities, axis=-1)
        # Keep a token if the mass before it is below top_p (the most likely token is always kept).
        keep_sorted = (cumulative - sorted_probabilities) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probabilities = np.where(keep, probabilities, 0.0)
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
    cumulative = probabilities.cumsum(axis=-1)
    draws = rng.random((probabilities.shape[0], 1)) * cumulative[:, -1:]
    choice = (cumulative < draws).sum(axis=-1)
    return np.minimum(choice, probabilities.shape[-1] - 1).astype(np.int32)


def sample_on_device(logits, uniforms, temperature, greedy=False, top_k=None, top_p=None):
    """Picks one token per row of `logits` `(B, V)` with `keras.ops`, inside a compiled decode loop.

    The rule of `select_next_tokens`, step for step, in float32 instead of float64: temperature, top-k
    and top-p masks, then inverse-CDF sampling in vocabulary order with one uniform number per row.
    Given the same uniforms (the host draws them from the seeded generator, in the host sampler's
    order), both samplers pick the same token unless two cumulative probabilities differ by less
    than float32 rounding.

    Args:
        logits: float tensor `(B, V)`.
        uniforms: float tensor `(B,)` in `[0, 1)`.
        temperature: float scalar tensor, `> 0` unless `greedy`.
        greedy: bool (static). Take the argmax.
        top_k: int or None (static). Keep the k most likely tokens.
        top_p: float scalar tensor or None. Nucleus threshold.

    Returns:
        int32 tensor `(B,)`.
    """
    if greedy:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")
    logits = ops.cast(logits, "float32") / temperature
    vocabulary = logits.shape[-1]
    if top_k is not None and top_k < vocabulary:
        kth = ops.top_k(logits, k=top_k)[0][:, -1:]
        logits = ops.where(logits < kth, float("-inf"), logits)
    probabilities = ops.softmax(logits, axis=-1)
    if top_p is not None:
        # Keep a token if the mass of the more likely tokens is below top_p: the kept tokens are those at
        # least as likely as the least likely one of that prefix of the descending order.
        descending = ops.top_k(probabilities, k=vocabulary)[0]
        kept = (ops.cumsum(descending, axis=-1) - descending) < top_p
        smallest = ops.min(ops.where(kept, descending, 2.0), axis=-1, keepdims=True)
        probabilities = ops.where(probabilities >= smallest, probabilities, 0.0)
    cumulative = ops.cumsum(probabilities, axis=-1)
    draws = uniforms[:, None] * cumulative[:, -1:]
    choice = ops.sum(ops.cast(cumulative < draws, "int32"), axis=-1)
    return ops.minimum(choice, vocabulary - 1)
