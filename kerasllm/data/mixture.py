"""`MixtureDataset`: batches drawn from several datasets with given probabilities (multi-task training)."""

import keras
import numpy as np


class MixtureDataset(keras.utils.PyDataset):
    """Draws each batch from one of several datasets, chosen with given probabilities.

    At the start of every epoch the source of each batch is drawn from `weights` (normalized to
    probabilities), fixed by `seed` and the epoch number; a source's batches are then used in order,
    cycling when one runs out. All datasets must yield batches of the same structure and shapes, so the
    compiled training step is traced once. `on_epoch_end` is passed on to every dataset.

    Args:
        datasets: list of `keras.utils.PyDataset` (or sequences of batches with `len`). The tasks.
        weights: list of float > 0. Sampling weight of each dataset; normalized to sum to one.
            Defaults to `None` (proportional to each dataset's number of batches).
        seed: int. Seed of the draws. Defaults to `0`.
        num_batches: int. Batches per epoch. Defaults to `None` (the datasets' total number of batches).
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`,
            `max_queue_size`).

    Example:

    ```python
    mixture = kerasllm.data.MixtureDataset([tragedies, comedies], weights=[0.3, 0.7], seed=0)
    model.fit(mixture, epochs=2)
    ```
    """

    def __init__(self, datasets, weights=None, seed=0, num_batches=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(datasets, keras.utils.PyDataset) or not isinstance(datasets, (list, tuple)) or not datasets:
            raise ValueError(
                f"`datasets` must be a non-empty list of datasets, but got {type(datasets).__name__}. Wrap a "
                "single dataset in a list."
            )
        self.datasets = list(datasets)
        self._counts = [batch_count(d, f"datasets[{i}]") for i, d in enumerate(self.datasets)]
        if weights is None:
            weights = list(self._counts)
        weights = np.asarray(weights, dtype=np.float64) if _is_numeric_list(weights) else None
        if weights is None or weights.ndim != 1 or len(weights) != len(self.datasets):
            raise ValueError(
                f"`weights` must be a list of {len(self.datasets)} numbers, one per dataset, but got "
                f"{weights!r}."
            )
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(
                f"`weights` must all be positive and finite, but got {weights.tolist()}. Leave a dataset out "
                "instead of giving it weight 0."
            )
        self.weights = (weights / weights.sum()).tolist()
        self.seed = check_seed(seed)
        if num_batches is not None and (
            isinstance(num_batches, bool) or not isinstance(num_batches, (int, np.integer)) or num_batches < 1
        ):
            raise ValueError(f"`num_batches` must be a positive int or None, but got {num_batches!r}.")
        self._num_batches = int(num_batches) if num_batches is not None else int(sum(self._counts))
        check_same_structure([d[0] for d in self.datasets], [f"datasets[{i}]" for i in range(len(self.datasets))])
        self._epoch = 0
        self._draw()

    @property
    def num_batches(self):
        return self._num_batches

    def __len__(self):
        return self._num_batches

    def sources(self):
        """The dataset index of each batch of the current epoch, as an int array."""
        return self._sources.copy()

    def __getitem__(self, index):
        if not 0 <= index < self._num_batches:
            raise IndexError(f"Batch index {index} is out of range for {self._num_batches} batches.")
        source = int(self._sources[index])
        return self.datasets[source][int(self._positions[index] % self._counts[source])]

    def on_epoch_end(self):
        self._epoch += 1
        self._draw()
        for dataset in self.datasets:
            if hasattr(dataset, "on_epoch_end"):
                dataset.on_epoch_end()

    def _draw(self):
        rng = np.random.default_rng([self.seed, self._epoch])
        self._sources = rng.choice(len(self.datasets), size=self._num_batches, p=self.weights)
        # Position of each batch within its source: how many earlier batches came from the same source.
        self._positions = np.zeros(self._num_batches, np.int64)
        seen = np.zeros(len(self.datasets), np.int64)
        for i, source in enumerate(self._sources):
            self._positions[i] = seen[source]
            seen[source] += 1


def _is_numeric_list(values):
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        return False
    return array.dtype.kind in "iuf"


def batch_count(dataset, name):
    """The number of batches of a PyDataset or sequence; a `ValueError` if it has none or no length."""
    count = getattr(dataset, "num_batches", None) if isinstance(dataset, keras.utils.PyDataset) else None
    if count is None:
        try:
            count = len(dataset)
        except TypeError:
            raise ValueError(
                f"`{name}` must be a keras.utils.PyDataset or a sequence of batches with a length, but got "
                f"{type(dataset).__name__}."
            ) from None
    if count < 1:
        raise ValueError(f"`{name}` has no batches. Pass a dataset with at least one batch.")
    return int(count)


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0, but got {seed!r}.")
    return int(seed)


def check_same_structure(batches, names, check_batch_size=True):
    """Batches must share their structure and shapes (after the batch axis unless `check_batch_size`)."""
    first = batches[0]
    for batch, name in zip(batches[1:], names[1:]):
        try:
            keras.tree.assert_same_structure(first, batch)
        except (ValueError, TypeError):
            raise ValueError(
                f"`{name}` yields batches structured unlike `{names[0]}`'s. Give every dataset the same kind "
                "of batches (e.g. all `(x, y)` tuples)."
            ) from None
        for a, b in zip(keras.tree.flatten(first), keras.tree.flatten(batch)):
            shape_a, shape_b = np.shape(a), np.shape(b)
            if (shape_a if check_batch_size else shape_a[1:]) != (shape_b if check_batch_size else shape_b[1:]):
                raise ValueError(
                    f"`{name}` yields arrays of shape {shape_b} where `{names[0]}` yields {shape_a}. Build the "
                    "datasets with the same batch_size and sequence_length."
                )
