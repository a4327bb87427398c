"""`pack_documents`: many tokenized documents into one token stream."""

import numpy as np

from kerasllm.utils.validation import validate_token_ids


def pack_documents(documents_token_ids, eos_token_id):
    """Concatenates tokenized documents into one stream, with `eos_token_id` between documents.

    Language models learn from a single token stream cut into windows; the end-of-text token between
    documents tells the model where one ends and the next begins. Empty documents are skipped. No separator
    follows the last document.

    Args:
        documents_token_ids: list of lists (or 1-D arrays) of int. One id sequence per document.
        eos_token_id: int. The separator id, e.g. `tokenizer.eos_token_id`. `None` concatenates the
            documents with no separator.

    Returns:
        A 1-D int32 NumPy array.

    Example:

    ```python
    kerasllm.data.pack_documents([[5, 6], [7], [8, 9]], eos_token_id=1)
    # array([5, 6, 1, 7, 1, 8, 9], dtype=int32)
    ```
    """
    valid_int = isinstance(eos_token_id, (int, np.integer)) and not isinstance(eos_token_id, bool)
    if eos_token_id is not None and not (valid_int and eos_token_id >= 0):
        raise ValueError(f"`eos_token_id` must be a non-negative int or None, but got {eos_token_id!r}.")
    pieces = []
    for index, document in enumerate(documents_token_ids):
        document = np.asarray(document)
        if document.size == 0:
            continue
        document = validate_token_ids(document, name=f"documents_token_ids[{index}]", ranks=(1,))
        if pieces and eos_token_id is not None:
            pieces.append(np.array([eos_token_id], dtype=np.int32))
        pieces.append(document.astype(np.int32))
    if not pieces:
        raise ValueError("`documents_token_ids` holds no tokens; give at least one non-empty document.")
    return np.concatenate(pieces)
