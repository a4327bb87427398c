"""ReplayDataset and MixtureDataset: fractions, proportions, determinism, shapes and errors."""

import keras
import numpy as np
import pytest

import kerasllm


class _Constant(keras.utils.PyDataset):
    """Batches `(x, y)` whose rows are filled with `value * 1000 + batch index`, to trace their origin."""

    def __init__(self, value, num_batches=5, batch_size=8, length=4):
        super().__init__()
        self.value, self.count, self.batch_size, self.length = value, num_batches, batch_size, length
        self.epochs_ended = 0

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rows = np.full((self.batch_size, self.length), self.value * 1000 + index, np.int32)
        rows += np.arange(self.batch_size, dtype=np.int32)[:, None] * 10  # row id in the tens
        return rows, rows + 1

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_replay_replaces_the_given_fraction_of_rows():
    new, old = _Constant(1), _Constant(2, num_batches=3)
    replay = kerasllm.data.ReplayDataset(new, old, fraction=0.25, seed=0)
    assert len(replay) == len(new)
    for i in range(len(replay)):
        x, y = replay[i]
        assert x.shape == (8, 4) and x.dtype == np.int32
        np.testing.assert_array_equal(y, x + 1)  # x and y rows stay paired
        from_old = x[:, 0] // 1000 == 2
        assert from_old.sum() == 2  # round(0.25 * 8)
        np.testing.assert_array_equal(x[:6], new[i][0][:6])  # the first rows are the new batch's
        assert len(set(x[6:, 0].tolist())) == 2  # drawn without replacement


def test_replay_is_deterministic_and_changes_per_epoch():
    def draws(seed, epochs=2):
        replay = kerasllm.data.ReplayDataset(_Constant(1), _Constant(2, num_batches=7), fraction=0.5, seed=seed)
        out = []
        for _ in range(epochs):
            out.append(np.stack([replay[i][0] for i in range(len(replay))]))
            replay.on_epoch_end()
        return out

    first, again, other = draws(0), draws(0), draws(1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])


def test_replay_zero_fraction_and_small_old_batches():
    new = _Constant(1)
    x, _ = kerasllm.data.ReplayDataset(new, _Constant(2), fraction=0.0)[3]
    np.testing.assert_array_equal(x, new[3][0])
    # Old batches of 2 rows: 6 replayed rows come from several old batches.
    x, _ = kerasllm.data.ReplayDataset(new, _Constant(2, batch_size=2), fraction=0.75)[0]
    assert x.shape == (8, 4) and (x[:, 0] // 1000 == 2).sum() == 6


def test_replay_forwards_epoch_end():
    new, old = _Constant(1), _Constant(2)
    kerasllm.data.ReplayDataset(new, old).on_epoch_end()
    assert new.epochs_ended == old.epochs_ended == 1


def test_replay_errors():
    for fraction in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"fraction.*\[0, 1\)"):
            kerasllm.data.ReplayDataset(_Constant(1), _Constant(2), fraction=fraction)
    with pytest.raises(ValueError, match="shape"):
        kerasllm.data.ReplayDataset(_Constant(1), _Constant(2, length=5))
    with pytest.raises(ValueError, match="no batches"):
        kerasllm.data.ReplayDataset(_Constant(1), _Constant(2, num_batches=0))


def test_mixture_proportions_and_order():
    datasets = [_Constant(1, num_batches=4), _Constant(2, num_batches=4), _Constant(3, num_batches=4)]
    mixture = kerasllm.data.MixtureDataset(datasets, weights=[1.0, 2.0, 5.0], seed=0, num_batches=4000)
    assert mixture.weights == pytest.approx([0.125, 0.25, 0.625])
    sources = mixture.sources()
    np.testing.assert_allclose(np.bincount(sources, minlength=3) / 4000, mixture.weights, atol=0.03)
    # Each batch comes from its drawn source, whose batches are used in order and cycle.
    seen = [0, 0, 0]
    for i in range(40):
        x, _ = mixture[i]
        source = sources[i]
        assert x[0, 0] == (source + 1) * 1000 + seen[source] % 4
        seen[source] += 1


def test_mixture_is_deterministic_and_redraws_per_epoch():
    def make(seed):
        return kerasllm.data.MixtureDataset([_Constant(1), _Constant(2)], weights=[1, 1], seed=seed)

    a, b, c = make(0), make(0), make(1)
    assert len(a) == 10  # the datasets' total by default
    np.testing.assert_array_equal(a.sources(), b.sources())
    np.testing.assert_array_equal(a[3][0], b[3][0])
    assert not np.array_equal(a.sources(), c.sources())
    before = a.sources()
    a.on_epoch_end()
    assert a.datasets[0].epochs_ended == 1
    assert not np.array_equal(before, a.sources())


def test_mixture_trains_a_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss="mse")

    class Floats(_Constant):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return x.astype("float32") / 5000, y.astype("float32") / 5000

    mixture = kerasllm.data.MixtureDataset([Floats(1), Floats(2)], weights=[0.5, 0.5])
    history = model.fit(mixture, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mixture_errors():
    with pytest.raises(ValueError, match="positive"):
        kerasllm.data.MixtureDataset([_Constant(1), _Constant(2)], weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        kerasllm.data.MixtureDataset([_Constant(1), _Constant(2)], weights=[1.0, -2.0])
    with pytest.raises(ValueError, match="one per dataset"):
        kerasllm.data.MixtureDataset([_Constant(1), _Constant(2)], weights=[1.0])
    with pytest.raises(ValueError, match="non-empty list"):
        kerasllm.data.MixtureDataset([], weights=[])
    with pytest.raises(ValueError, match="shape"):
        kerasllm.data.MixtureDataset([_Constant(1), _Constant(2, batch_size=4)], weights=[1, 1])
    with pytest.raises(ValueError, match="shape"):
        kerasllm.data.MixtureDataset([_Constant(1), _Constant(2, length=3)], weights=[1, 1])
