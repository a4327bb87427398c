import numpy as np
import pytest

import kerasllm.losses
from kerasllm.data import IGNORE_INDEX, mask_tokens

VOCABULARY = 1000
MASK = 2
SPECIAL = (0, 1, 2)


@pytest.fixture(scope="module")
def large_sample():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCABULARY, size=(200, 1000))
    ids[:, -50:] = 0  # padding
    ids[:, 100] = 1  # end of text
    inputs, labels = mask_tokens(ids, MASK, VOCABULARY, special_token_ids=SPECIAL, seed=7)
    return ids, inputs, labels


def test_labels_ignore_exactly_the_unselected_positions(large_sample):
    ids, inputs, labels = large_sample
    assert IGNORE_INDEX == -100 == kerasllm.losses.IGNORE_INDEX
    assert inputs.dtype == labels.dtype == np.int32 and inputs.shape == labels.shape == ids.shape
    selected = labels != IGNORE_INDEX
    np.testing.assert_array_equal(labels[selected], ids[selected])
    # Unselected positions are never changed.
    np.testing.assert_array_equal(inputs[~selected], ids[~selected])


def test_special_positions_never_selected(large_sample):
    ids, _, labels = large_sample
    assert np.all(labels[np.isin(ids, SPECIAL)] == IGNORE_INDEX)


def test_proportions(large_sample):
    ids, inputs, labels = large_sample
    selected = labels != IGNORE_INDEX
    candidates = ~np.isin(ids, SPECIAL)
    assert abs(selected.sum() / candidates.sum() - 0.15) < 0.005
    masked = (inputs == MASK) & selected
    kept = (inputs == ids) & selected
    randomized = selected & ~masked & ~kept
    total = selected.sum()
    assert abs(masked.sum() / total - 0.8) < 0.01
    assert abs(kept.sum() / total - 0.1) < 0.01  # includes the ~0.1% random draws equal to the original
    assert abs(randomized.sum() / total - 0.1) < 0.01
    assert not np.isin(inputs[randomized], SPECIAL).any()


def test_seed_is_deterministic():
    ids = np.arange(3, 203).reshape(2, 100)
    first = mask_tokens(ids, MASK, VOCABULARY, seed=3)
    second = mask_tokens(ids, MASK, VOCABULARY, seed=np.random.default_rng(3))
    other = mask_tokens(ids, MASK, VOCABULARY, seed=4)
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


def test_bad_inputs_raise():
    ids = np.array([[3, 4, 5]])
    with pytest.raises(ValueError, match="dtype"):
        mask_tokens(ids.astype("float32"), MASK, VOCABULARY)
    with pytest.raises(ValueError, match="negative"):
        mask_tokens(-ids, MASK, VOCABULARY)
    with pytest.raises(ValueError, match="vocabulary has only"):
        mask_tokens(ids, MASK, 5)
    with pytest.raises(ValueError, match="mask_probability"):
        mask_tokens(ids, MASK, VOCABULARY, mask_probability=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        mask_tokens(ids, VOCABULARY, VOCABULARY)
