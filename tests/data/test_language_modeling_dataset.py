import keras
import numpy as np
import pytest

from kerasllm.data import LanguageModelingDataset


def stream(length=1000):
    return (np.arange(length) * 7 % 97).astype("int64")


def test_windows_are_shifted_slices_of_the_stream():
    ids = stream()
    dataset = LanguageModelingDataset(ids, sequence_length=8, batch_size=4, shuffle=False)
    assert isinstance(dataset, keras.utils.PyDataset)
    assert dataset.num_windows == 1000 // 9 and len(dataset) == 111 // 4
    for index in (0, 5, len(dataset) - 1):
        x, y = dataset[index]
        assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == np.int32
        for row in range(4):
            start = (index * 4 + row) * 9
            np.testing.assert_array_equal(x[row], ids[start : start + 8])
            np.testing.assert_array_equal(y[row], ids[start + 1 : start + 9])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_shuffled_epoch_covers_the_same_windows():
    ids = stream(9 * 4 * 28)  # whole batches, so no window is dropped
    plain = LanguageModelingDataset(ids, 8, 4, shuffle=False)
    shuffled = LanguageModelingDataset(ids, 8, 4, seed=1)
    rows = lambda d: {tuple(r) for i in range(len(d)) for r in d[i][0]}
    assert rows(plain) == rows(shuffled)
    assert not np.array_equal(plain[0][0], shuffled[0][0])


def test_order_is_deterministic_per_seed_and_changes_per_epoch():
    ids = stream()
    a, b, c = (LanguageModelingDataset(ids, 8, 4, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], c[0][0])
    first_epoch = a[0][0]
    a.on_epoch_end()
    b.on_epoch_end()
    assert a.epoch == 1 and not np.array_equal(a[0][0], first_epoch)
    np.testing.assert_array_equal(a[0][0], b[0][0])


def test_attributes_and_pydataset_kwargs():
    dataset = LanguageModelingDataset(stream(), 8, 4, vocabulary_size=97, workers=2)
    assert (dataset.sequence_length, dataset.batch_size, dataset.vocabulary_size) == (8, 4, 97)
    assert dataset.workers == 2


def test_fit_runs_and_reshuffles_each_epoch():
    vocabulary = 97
    dataset = LanguageModelingDataset(stream(), 8, 4, vocabulary_size=vocabulary)
    model = keras.Sequential(
        [keras.Input((8,), dtype="int32"), keras.layers.Embedding(vocabulary, 4), keras.layers.Dense(vocabulary)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert dataset.epoch >= 2


@pytest.mark.parametrize(
    "ids, vocabulary_size, message",
    [
        (np.arange(100, dtype="float32"), None, "dtype"),
        (np.arange(100) - 1, None, "negative"),
        (np.arange(100), 50, "vocabulary has only"),
        (np.arange(100).reshape(10, 10), None, "rank"),
    ],
)
def test_bad_ids_raise(ids, vocabulary_size, message):
    with pytest.raises(ValueError, match=message):
        LanguageModelingDataset(ids, 4, 2, vocabulary_size=vocabulary_size)


def test_too_short_stream_says_what_is_needed():
    with pytest.raises(ValueError, match=r"(?s)35 tokens.*36 tokens.*Lower `batch_size` or `sequence_length`"):
        LanguageModelingDataset(np.arange(35), sequence_length=8, batch_size=4)
    with pytest.raises(ValueError, match="positive int"):
        LanguageModelingDataset(np.arange(35), sequence_length=0, batch_size=4)
