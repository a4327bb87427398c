import keras
import numpy as np
import pytest

from kerasllm.data import IGNORE_INDEX, MaskedLanguageModelingDataset

VOCABULARY = 50


def make(**kwargs):
    ids = 3 + np.arange(2000) % (VOCABULARY - 3)
    ids[::10] = 1  # end-of-text tokens
    settings = dict(
        sequence_length=16, batch_size=4, mask_token_id=2, vocabulary_size=VOCABULARY, special_token_ids=(0, 1, 2)
    )
    settings.update(kwargs)
    return ids, MaskedLanguageModelingDataset(ids, **settings)


def test_batches_are_masked_windows():
    ids, dataset = make(shuffle=False)
    assert isinstance(dataset, keras.utils.PyDataset)
    assert dataset.num_windows == 125 and len(dataset) == 31
    inputs, labels = dataset[3]
    assert inputs.shape == labels.shape == (4, 16) and inputs.dtype == labels.dtype == np.int32
    windows = ids[3 * 64 : 4 * 64].reshape(4, 16)
    selected = labels != IGNORE_INDEX
    assert selected.any()
    np.testing.assert_array_equal(labels[selected], windows[selected])
    np.testing.assert_array_equal(inputs[~selected], windows[~selected])
    assert not selected[windows == 1].any()


def test_masking_is_dynamic_but_deterministic():
    _, a = make(seed=5)
    _, b = make(seed=5)
    np.testing.assert_array_equal(a[0][1], b[0][1])
    first_inputs = a[0][0]
    np.testing.assert_array_equal(a[0][0], first_inputs)  # the same batch twice in one epoch
    a.on_epoch_end()
    b.on_epoch_end()
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], first_inputs)


def test_static_masking_without_shuffle_repeats():
    _, dataset = make(shuffle=False, dynamic_masking=False)
    first = dataset[0]
    dataset.on_epoch_end()
    np.testing.assert_array_equal(dataset[0][0], first[0])
    np.testing.assert_array_equal(dataset[0][1], first[1])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="vocabulary has only"):
        make(vocabulary_size=10)
    with pytest.raises(ValueError, match="mask_probability"):
        make(mask_probability=1.5)
    with pytest.raises(ValueError, match="too few for one batch"):
        make(batch_size=200)
