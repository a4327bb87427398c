"""`mask_tokens`: BERT-style corruption for masked language modeling, and `IGNORE_INDEX`."""

import numpy as np

from kerasllm.utils.validation import validate_token_ids

# The label of positions that carry no loss. kerasllm's losses and metrics skip labels equal to it.
IGNORE_INDEX = -100


def mask_tokens(
    token_ids,
    mask_token_id,
    vocabulary_size,
    mask_probability=0.15,
    special_token_ids=(),
    seed=None,
):
    """Picks positions to predict and corrupts them the BERT way (80% mask, 10% random, 10% kept).

    Each position is selected with probability `mask_probability`, except special tokens (pass the pad,
    end-of-text and other special ids in `special_token_ids`; the mask id is always excluded). Of the
    selected positions 80% become `mask_token_id`, 10% a random id drawn uniformly from
    `[0, vocabulary_size)` without the special ids, and 10% stay unchanged.

    Args:
        token_ids: array-like of int, 1-D or 2-D. The token ids.
        mask_token_id: int. The id of the mask token (`tokenizer.mask_token_id`).
        vocabulary_size: int. The vocabulary size; random replacements and the id check use it.
        mask_probability: float. The fraction of positions to select, in `(0, 1]`. Defaults to `0.15`.
        special_token_ids: list of int. Ids never selected and never drawn as random replacements
            (`tokenizer.special_token_ids`). Defaults to `()`.
        seed: int, `None` or `numpy.random.Generator`. The randomness. Defaults to `None` (fresh).

    Returns:
        A tuple `(inputs, labels)` of int32 arrays shaped like `token_ids`: the corrupted ids, and the
        original ids at selected positions with `kerasllm.data.IGNORE_INDEX` (-100) everywhere else.

    Example:

    ```python
    inputs, labels = kerasllm.data.mask_tokens(
        ids, tokenizer.mask_token_id, tokenizer.vocabulary_size,
        special_token_ids=tokenizer.special_token_ids, seed=0,
    )
    ```

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
    """
    _check_int(vocabulary_size, "vocabulary_size", minimum=1)
    _check_int(mask_token_id, "mask_token_id", minimum=0)
    if mask_token_id >= vocabulary_size:
        raise ValueError(
            f"`mask_token_id={mask_token_id}` is outside the vocabulary of {vocabulary_size} ids; use "
            "`tokenizer.mask_token_id` and `tokenizer.vocabulary_size` from the same tokenizer."
        )
    if isinstance(mask_probability, bool) or not isinstance(mask_probability, (int, float)) or not (
        0.0 < mask_probability <= 1.0
    ):
        raise ValueError(f"`mask_probability` must be a number in (0, 1], e.g. 0.15, but got {mask_probability!r}.")
    token_ids = validate_token_ids(token_ids, vocabulary_size=vocabulary_size).astype(np.int32)
    special = np.unique(np.asarray(list(special_token_ids) + [mask_token_id], dtype=np.int64))
    replacements = np.setdiff1d(np.arange(vocabulary_size), special)
    if replacements.size == 0:
        raise ValueError("Every id of the vocabulary is special, so there is no token to draw as a random replacement.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    selected = (rng.random(token_ids.shape) < mask_probability) & ~np.isin(token_ids, special)
    action = rng.random(token_ids.shape)
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    random_ids = replacements[rng.integers(0, replacements.size, size=token_ids.shape)].astype(np.int32)

    inputs = np.where(to_mask, np.int32(mask_token_id), token_ids)
    inputs = np.where(to_random, random_ids, inputs).astype(np.int32)
    labels = np.where(selected, token_ids, np.int32(IGNORE_INDEX)).astype(np.int32)
    return inputs, labels


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, but got {value!r}.")
