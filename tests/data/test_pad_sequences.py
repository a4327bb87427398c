import numpy as np
import pytest

from kerasllm.data import pad_sequences


def test_right_padding_to_longest():
    ids, mask = pad_sequences([[5, 6, 7], [8], []], pad_token_id=9)
    assert ids.dtype == np.int32 and mask.dtype == bool
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 9, 9], [9, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_left_padding_keeps_the_end():
    ids, mask = pad_sequences([[5, 6, 7], [8]], length=2, padding="left")
    np.testing.assert_array_equal(ids, [[6, 7], [0, 8]])
    np.testing.assert_array_equal(mask, [[1, 1], [0, 1]])


def test_right_truncation_keeps_the_start():
    ids, mask = pad_sequences([np.arange(10, 15)], length=3)
    np.testing.assert_array_equal(ids, [[10, 11, 12]])
    assert mask.all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="truncate=True"):
        pad_sequences([[1, 2, 3]], length=2, truncate=False)
    with pytest.raises(ValueError, match="padding"):
        pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([])
    with pytest.raises(ValueError, match="dtype"):
        pad_sequences([[1.5]])
    with pytest.raises(ValueError, match="negative"):
        pad_sequences([[1, -2]])
    with pytest.raises(ValueError, match="length"):
        pad_sequences([[1]], length=0)
