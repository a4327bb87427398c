"""Helpers shared by the windowed datasets: argument checks, window cutting and epoch order."""

import numpy as np

from kerasllm.utils.validation import validate_token_ids


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, but got {value!r}.")
    return int(value)


def cut_windows(token_ids, window_length, batch_size, vocabulary_size, what):
    """Checks a 1-D id stream and cuts it into non-overlapping rows of `window_length` (a view)."""
    ids = validate_token_ids(token_ids, vocabulary_size=vocabulary_size, name="token_ids", ranks=(1,))
    ids = ids.astype(np.int32, copy=False)
    num_windows = len(ids) // window_length
    if num_windows < batch_size:
        needed = window_length * batch_size
        raise ValueError(
            f"The token stream has {len(ids)} tokens, too few for one batch: {what} needs "
            f"batch_size * {window_length} = {needed} tokens. Lower `batch_size` or `sequence_length`, or "
            "give more text."
        )
    return ids[: num_windows * window_length].reshape(num_windows, window_length)


def window_order(num_windows, shuffle, seed, epoch):
    """The window order of one epoch: a permutation fixed by `(seed, epoch)`, or `0, 1, ...`."""
    if not shuffle:
        return np.arange(num_windows)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_windows)
