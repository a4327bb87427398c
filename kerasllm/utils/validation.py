"""Checks on data that users hand in, shared by the data pipeline and the models.

Every check runs on NumPy values outside any compiled step, so the training step stays as fast as it is.
JAX silently returns NaN rows for out-of-range embedding lookups and wraps negative ids, so an explicit
check is the only way to give the same error on every backend.
"""

import numpy as np


def validate_token_ids(token_ids, vocabulary_size=None, max_length=None, name="token_ids", ranks=(1, 2)):
    """Checks that `token_ids` are integer ids in `[0, vocabulary_size)`.

    Args:
        token_ids: array-like. Token ids, usually of shape `(batch, sequence)`.
        vocabulary_size: int. The model's or tokenizer's vocabulary size. Defaults to `None` (not checked).
        max_length: int. The longest sequence allowed. Defaults to `None` (not checked).
        name: str. What to call the input in error messages. Defaults to `"token_ids"`.
        ranks: tuple of int. Accepted ranks. Defaults to `(1, 2)`.

    Returns:
        The ids as a NumPy integer array.

    Raises:
        ValueError: with a message naming the problem and the fix.
    """
    array = np.asarray(token_ids)
    if array.dtype == object:
        raise ValueError(
            f"`{name}` must be a rectangular array of integer token ids, but it is ragged or holds "
            "non-numbers. Pad sequences to one length (see `kerasllm.data.pad_sequences`) or tokenize "
            "text first with a `kerasllm.tokenizers` tokenizer."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.bool_):
            raise ValueError(
                f"`{name}` must hold integer token ids, but its dtype is {array.dtype}. Token ids index "
                "the vocabulary; cast them with `.astype('int32')` if they are whole numbers, or "
                "tokenize text with a `kerasllm.tokenizers` tokenizer."
            )
        raise ValueError(
            f"`{name}` must hold integer token ids, but its dtype is {array.dtype}. Tokenize text with a "
            "`kerasllm.tokenizers` tokenizer (`tokenizer.encode(text)`) and pass the ids it returns."
        )
    if ranks is not None and array.ndim not in ranks:
        raise ValueError(
            f"`{name}` must have rank {' or '.join(str(r) for r in ranks)} "
            f"({' or '.join(_RANK_SHAPES.get(r, f'rank {r}') for r in ranks)}), but it has shape "
            f"{array.shape}. {_rank_fix(array.ndim, ranks)}"
        )
    if array.size == 0:
        raise ValueError(f"`{name}` is empty (shape {array.shape}); give at least one token.")
    low = int(array.min())
    if low < 0:
        raise ValueError(
            f"`{name}` holds a negative token id ({low}). Ids must lie in [0, vocabulary_size); "
            "padding should use the tokenizer's `pad_token_id`, and ignored labels belong in the "
            "labels, not the inputs."
        )
    if vocabulary_size is not None:
        high = int(array.max())
        if high >= vocabulary_size:
            raise ValueError(
                f"`{name}` holds token id {high}, but the vocabulary has only {vocabulary_size} entries "
                f"(valid ids are 0..{vocabulary_size - 1}). Use the tokenizer the model was built for, or "
                f"build the model with `vocabulary_size={high + 1}` or more "
                "(`vocabulary_size=tokenizer.vocabulary_size`)."
            )
    if max_length is not None and array.ndim >= 1 and array.shape[-1] > max_length:
        raise ValueError(
            f"`{name}` has sequences of length {array.shape[-1]}, longer than the model's maximum "
            f"sequence length {max_length}. Shorten the inputs (e.g. `sequence_length={max_length}` in "
            f"the data pipeline) or build the model with a larger `max_sequence_length`."
        )
    return array


_RANK_SHAPES = {1: "shape (sequence,)", 2: "shape (batch, sequence)"}


def _rank_fix(ndim, ranks):
    if ndim < min(ranks):
        if max(ranks) == 2 and ndim == 1:
            return "Add a batch axis with `ids[None]` for a single sequence."
        return "Pass a sequence of ids, e.g. `[id]` or `np.array([id])`, not a single number."
    if min(ranks) == 1 and ndim == 2:
        return "Pass one sequence at a time (e.g. `ids[0]`), or use the batch method (`decode_batch`)."
    if max(ranks) == 1:
        return "Flatten the ids into one stream with `ids.reshape(-1)` (sequences joined end to end)."
    return "Remove the extra axes, e.g. with `ids.squeeze(-1)` or `ids.reshape(batch, sequence)`."


def validate_vocabulary_match(tokenizer_vocabulary_size, model_vocabulary_size, what="tokenizer"):
    """Raises if a tokenizer (or teacher) produces ids the model cannot embed."""
    if tokenizer_vocabulary_size > model_vocabulary_size:
        raise ValueError(
            f"The {what} has a vocabulary of {tokenizer_vocabulary_size} tokens but the model only "
            f"{model_vocabulary_size}: ids the {what} produces would fall outside the model's embedding. "
            f"Build the model with `vocabulary_size={tokenizer_vocabulary_size}` (e.g. "
            "`CausalLM.from_preset(name, vocabulary_size=tokenizer.vocabulary_size)`) or use the "
            f"{what} the model was trained with."
        )
