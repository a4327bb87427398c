import numpy as np
import pytest

from kerasllm.data import (
    IGNORE_INDEX,
    LanguageModelingDataset,
    MaskedLanguageModelingDataset,
    language_modeling_splits,
    masked_language_modeling_splits,
    pack_documents,
)
from kerasllm.tokenizers import CharacterTokenizer

DOCUMENTS = ["To be, or not to be, that is the question. " * 10, "Whether 'tis nobler in the mind to suffer. " * 10]


@pytest.fixture(scope="module")
def tokenizer():
    return CharacterTokenizer.train(DOCUMENTS)


def all_rows(dataset):
    return [row for i in range(len(dataset)) for row in dataset[i][0]]


def test_split_is_disjoint_and_covers_the_stream(tokenizer):
    train, val = language_modeling_splits(
        DOCUMENTS, tokenizer, sequence_length=7, batch_size=2, validation_fraction=0.25, shuffle=False
    )
    assert isinstance(train, LanguageModelingDataset) and isinstance(val, LanguageModelingDataset)
    assert train.vocabulary_size == val.vocabulary_size == tokenizer.vocabulary_size
    stream = pack_documents(tokenizer.encode_batch(DOCUMENTS), tokenizer.eos_token_id)
    assert (stream == tokenizer.eos_token_id).sum() == 1
    split = int(round(len(stream) * 0.75))
    np.testing.assert_array_equal(train.windows.reshape(-1), stream[: train.windows.size])
    np.testing.assert_array_equal(val.windows.reshape(-1), stream[split : split + val.windows.size])
    assert train.windows.size <= split
    # Each split drops fewer tokens than one batch of windows.
    assert split - len(train) * 2 * 8 < 2 * 8 * 2 and (len(stream) - split) - len(val) * 2 * 8 < 2 * 8 * 2
    np.testing.assert_array_equal(all_rows(train)[0], stream[:7])


def test_training_is_shuffled_validation_is_not(tokenizer):
    train, val = language_modeling_splits(DOCUMENTS, tokenizer, sequence_length=7, batch_size=2, seed=3)
    assert train.shuffle and not val.shuffle
    again, _ = language_modeling_splits(DOCUMENTS, tokenizer, sequence_length=7, batch_size=2, seed=3)
    np.testing.assert_array_equal(train[0][0], again[0][0])


def test_zero_fraction_gives_no_validation(tokenizer):
    train, val = language_modeling_splits(DOCUMENTS, tokenizer, sequence_length=7, batch_size=2, validation_fraction=0)
    assert val is None and train.num_windows == (sum(map(len, DOCUMENTS)) + 1) // 8


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, "0.1"])
def test_bad_fraction_raises(tokenizer, fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        language_modeling_splits(DOCUMENTS, tokenizer, validation_fraction=fraction)


def test_too_small_validation_split_says_so(tokenizer):
    with pytest.raises(ValueError, match="validation split has"):
        language_modeling_splits(DOCUMENTS, tokenizer, sequence_length=32, batch_size=4, validation_fraction=0.05)


def test_empty_corpus_raises(tokenizer):
    with pytest.raises(ValueError, match="corpus is empty"):
        language_modeling_splits("", tokenizer)


def test_masked_splits(tokenizer):
    train, val = masked_language_modeling_splits(
        DOCUMENTS, tokenizer, sequence_length=8, batch_size=2, mask_probability=0.5
    )
    assert isinstance(train, MaskedLanguageModelingDataset) and isinstance(val, MaskedLanguageModelingDataset)
    assert train.shuffle and not val.shuffle and not val.dynamic_masking
    assert train.special_token_ids == tokenizer.special_token_ids
    inputs, labels = train[0]
    assert (inputs == tokenizer.mask_token_id).any() and (labels == IGNORE_INDEX).any()


def test_masked_splits_need_a_mask_token():
    tokenizer = CharacterTokenizer.train(DOCUMENTS, special_tokens=("<|pad|>",))
    with pytest.raises(ValueError, match="no mask token"):
        masked_language_modeling_splits(DOCUMENTS, tokenizer)


def test_windows_is_a_read_only_view_in_corpus_order():
    ids = np.arange(10 * 5, dtype="int32") % 7
    data = LanguageModelingDataset(ids, sequence_length=4, batch_size=3, vocabulary_size=7, seed=1)
    windows = data.windows
    assert windows.shape == (10, 5)
    np.testing.assert_array_equal(windows.reshape(-1), ids[:50])
    with pytest.raises(ValueError):
        windows[0, 0] = 1
    x, y = data[0]  # the shuffled epoch draws its rows from the same windows
    assert all(any(np.array_equal(row, w[:-1]) for w in windows) for row in x)
