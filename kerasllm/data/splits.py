"""Ready-to-fit train/validation datasets from raw text and a tokenizer."""

import numpy as np

from kerasllm.data.language_modeling_dataset import LanguageModelingDataset
from kerasllm.data.masked_language_modeling_dataset import MaskedLanguageModelingDataset
from kerasllm.data.packing import pack_documents
from kerasllm.data.text_loading import load_documents


def language_modeling_splits(
    text, tokenizer, sequence_length=128, batch_size=32, validation_fraction=0.1, seed=0, shuffle=True
):
    """Tokenizes a corpus and returns training and validation datasets for next-token prediction.

    The documents of `text` (one per file, one per string; see `kerasllm.data.load_text`) are tokenized
    with `tokenizer.encode_batch` and packed into one stream with `tokenizer.eos_token_id` between them.
    The first `1 - validation_fraction` of the stream trains, the rest validates; the validation set is
    never shuffled.

    Args:
        text: str, path, or list of them. The corpus, as accepted by `kerasllm.data.load_text`.
        tokenizer: `kerasllm.tokenizers.Tokenizer`. The tokenizer.
        sequence_length: int. Tokens per example. Defaults to `128`.
        batch_size: int. Examples per batch. Defaults to `32`.
        validation_fraction: float. The share of tokens for validation, in `[0, 1)`; `0` returns no
            validation set (`None`). Defaults to `0.1`.
        seed: int. The seed of the training shuffling. Defaults to `0`.
        shuffle: bool. Whether to shuffle the training windows every epoch. Defaults to `True`.

    Returns:
        A tuple `(train, validation)` of `kerasllm.data.LanguageModelingDataset` (`validation` is `None`
        when `validation_fraction=0`), both with `vocabulary_size=tokenizer.vocabulary_size`.

    Example:

    ```python
    text = kerasllm.datasets.shakespeare()
    tokenizer = kerasllm.tokenizers.BytePairTokenizer.train(text, vocabulary_size=2048)
    train, val = kerasllm.data.language_modeling_splits(text, tokenizer, sequence_length=128)
    model.fit(train, validation_data=val, epochs=1)
    ```
    """
    train_ids, validation_ids = _tokenize_and_split(text, tokenizer, validation_fraction)
    common = dict(sequence_length=sequence_length, batch_size=batch_size, vocabulary_size=tokenizer.vocabulary_size)
    windows = dict(window=sequence_length + 1, batch_size=batch_size)
    train = _build("training", train_ids, validation_fraction, windows, LanguageModelingDataset,
                   shuffle=shuffle, seed=seed, **common)
    validation = _build("validation", validation_ids, validation_fraction, windows, LanguageModelingDataset,
                        shuffle=False, seed=seed, **common)
    return train, validation


def masked_language_modeling_splits(
    text, tokenizer, sequence_length=128, batch_size=32, validation_fraction=0.1, seed=0, mask_probability=0.15
):
    """Tokenizes a corpus and returns training and validation datasets for masked language modeling.

    Tokenizing, packing and splitting work as in `kerasllm.data.language_modeling_splits`. The training
    set shuffles and draws new masks every epoch; the validation set keeps its order and its masks. The
    tokenizer's special tokens are never masked.

    Args:
        text: str, path, or list of them. The corpus, as accepted by `kerasllm.data.load_text`.
        tokenizer: `kerasllm.tokenizers.Tokenizer`. A tokenizer with a mask token.
        sequence_length: int. Tokens per example. Defaults to `128`.
        batch_size: int. Examples per batch. Defaults to `32`.
        validation_fraction: float. The share of tokens for validation, in `[0, 1)`; `0` returns no
            validation set (`None`). Defaults to `0.1`.
        seed: int. The seed of the shuffling and masking. Defaults to `0`.
        mask_probability: float. The fraction of positions to predict. Defaults to `0.15`.

    Returns:
        A tuple `(train, validation)` of `kerasllm.data.MaskedLanguageModelingDataset` (`validation` is
        `None` when `validation_fraction=0`).

    Example:

    ```python
    train, val = kerasllm.data.masked_language_modeling_splits(text, tokenizer, sequence_length=128)
    inputs, labels = train[0]
    ```
    """
    if tokenizer.mask_token_id is None:
        raise ValueError(
            f"The tokenizer has no mask token (special tokens: {tokenizer.special_tokens}). Train it with "
            "\"<|mask|>\" among its `special_tokens` (the default)."
        )
    train_ids, validation_ids = _tokenize_and_split(text, tokenizer, validation_fraction)
    common = dict(
        sequence_length=sequence_length,
        batch_size=batch_size,
        mask_token_id=tokenizer.mask_token_id,
        vocabulary_size=tokenizer.vocabulary_size,
        special_token_ids=[i for i in tokenizer.special_token_ids if i is not None],
        mask_probability=mask_probability,
        seed=seed,
    )
    windows = dict(window=sequence_length, batch_size=batch_size)
    train = _build("training", train_ids, validation_fraction, windows, MaskedLanguageModelingDataset,
                   shuffle=True, **common)
    validation = _build("validation", validation_ids, validation_fraction, windows, MaskedLanguageModelingDataset,
                        shuffle=False, dynamic_masking=False, **common)
    return train, validation


def _tokenize_and_split(text, tokenizer, validation_fraction):
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, (int, float)) or not (
        0.0 <= validation_fraction < 1.0
    ):
        raise ValueError(
            f"`validation_fraction` must be a number in [0, 1) (e.g. 0.1), but got {validation_fraction!r}; "
            "use 0 for no validation set."
        )
    documents = load_documents(text)
    stream = pack_documents(tokenizer.encode_batch(documents), tokenizer.eos_token_id)
    split = int(round(len(stream) * (1.0 - validation_fraction)))
    return stream[:split], (stream[split:] if validation_fraction > 0 else None)


def _build(name, ids, validation_fraction, windows, dataset_class, **kwargs):
    if ids is None:
        return None
    needed = windows["window"] * windows["batch_size"]
    if len(ids) < needed:
        hint = "raise `validation_fraction`" if name == "validation" else "lower `validation_fraction`"
        raise ValueError(
            f"The {name} split has {len(ids)} tokens (validation_fraction={validation_fraction}), too few for "
            f"one batch of batch_size * {windows['window']} = {needed} tokens. Lower `batch_size` or "
            f"`sequence_length`, {hint}, or give more text."
        )
    return dataset_class(np.asarray(ids), **kwargs)
