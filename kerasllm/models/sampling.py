"""Next-token selection for `CausalLM.generate`: greedy, temperature, top-k and top-p (NumPy).

Sampling happens on the host in float64 from a seeded NumPy generator, so a seed gives the same text
on every backend.
"""

import numpy as np


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
