"""`pad_sequences`: id sequences of different lengths into one rectangular batch."""

import numpy as np

from kerasllm.utils.validation import validate_token_ids


def pad_sequences(sequences, length=None, pad_token_id=0, padding="right", truncate=True):
    """Pads (and truncates) id sequences to one length, and says which positions are real tokens.

    Padding and truncation happen on the same side: `padding="right"` appends pads and cuts the end of
    long sequences; `padding="left"` (for generation prompts) prepends pads and keeps the last `length`
    tokens.

    Args:
        sequences: list of lists (or 1-D arrays) of int. The token id sequences.
        length: int. The output length. Defaults to `None` (the longest sequence).
        pad_token_id: int. The id written at padded positions. Defaults to `0`.
        padding: str. `"right"` or `"left"`. Defaults to `"right"`.
        truncate: bool. Whether to cut sequences longer than `length`; if `False` they raise a
            `ValueError`. Defaults to `True`.

    Returns:
        A tuple `(token_ids, padding_mask)`: an int32 array and a bool array of shape
        `(len(sequences), length)`; the mask is `True` at real tokens.

    Example:

    ```python
    ids, mask = kerasllm.data.pad_sequences([[5, 6, 7], [8]], pad_token_id=0)
    # ids  [[5, 6, 7], [8, 0, 0]]
    # mask [[True, True, True], [True, False, False]]
    ```
    """
    if padding not in ("right", "left"):
        raise ValueError(f'`padding` must be "right" or "left", but got {padding!r}.')
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)) or pad_token_id < 0:
        raise ValueError(f"`pad_token_id` must be a non-negative int, but got {pad_token_id!r}.")
    arrays = []
    for index, sequence in enumerate(sequences):
        sequence = np.asarray(sequence)
        if sequence.size:
            sequence = validate_token_ids(sequence, name=f"sequences[{index}]", ranks=(1,))
        arrays.append(sequence.reshape(-1).astype(np.int32))
    if not arrays:
        raise ValueError("`sequences` is empty; give at least one sequence.")
    longest = max(len(a) for a in arrays)
    if length is None:
        length = longest
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"`length` must be a positive int or None, but got {length!r}.")
    if longest > length and not truncate:
        raise ValueError(
            f"A sequence has {longest} tokens, more than `length={length}`. Pass `truncate=True`, or a "
            f"larger `length`."
        )
    token_ids = np.full((len(arrays), length), pad_token_id, dtype=np.int32)
    padding_mask = np.zeros((len(arrays), length), dtype=bool)
    for row, array in enumerate(arrays):
        if padding == "right":
            array = array[:length]
            token_ids[row, : len(array)] = array
            padding_mask[row, : len(array)] = True
        else:
            array = array[len(array) - min(len(array), length) :]
            token_ids[row, length - len(array) :] = array
            padding_mask[row, length - len(array) :] = True
    return token_ids, padding_mask
