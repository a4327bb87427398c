"""`ReplayDataset`: new-task batches with a fraction of each batch replaced by earlier data."""

import keras
import numpy as np

from kerasllm.data.mixture import batch_count, check_seed, check_same_structure


class ReplayDataset(keras.utils.PyDataset):
    """Mixes rows of an earlier task's data into every batch of a new task (experience replay).

    Batch `i` is batch `i` of `new` with its last `round(fraction * batch_size)` rows replaced by rows
    of `old`: rows drawn without replacement from randomly chosen `old` batches, fixed by `seed`, the
    epoch and `i` (so `dataset[i]` gives the same batch every time within an epoch, and a different
    draw in the next epoch). The batch size and every shape stay those of `new`; an epoch has
    `len(new)` batches. `on_epoch_end` is passed on to both datasets (e.g. to reshuffle them).

    Args:
        new: `keras.utils.PyDataset` (or any sequence of batches with `len`). The new task's batches:
            an array, a tuple `(x, y)` / `(x, y, sample_weight)` or a dict of arrays, all with the
            batch on the first axis.
        old: `keras.utils.PyDataset` (or sequence). The earlier task's batches, structured like `new`
            with the same shapes after the batch axis.
        fraction: float in `[0, 1)`. Share of each batch's rows taken from `old`. Defaults to `0.25`.
        seed: int. Seed of the draws. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`,
            `max_queue_size`).

    Example:

    ```python
    tragedies = kerasllm.data.LanguageModelingDataset(tragedy_ids, sequence_length=128, batch_size=32)
    comedies = kerasllm.data.LanguageModelingDataset(comedy_ids, sequence_length=128, batch_size=32)
    model.fit(kerasllm.data.ReplayDataset(comedies, tragedies, fraction=0.25), epochs=2)
    ```

    References:
        - [Rolnick et al., 2019, Experience Replay for Continual Learning](https://arxiv.org/abs/1811.11682)
    """

    def __init__(self, new, old, fraction=0.25, seed=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0 <= fraction < 1:
            raise ValueError(
                f"`fraction` must be a number in [0, 1), but got {fraction!r}: it is the share of each batch "
                "taken from the old data, so at least one row must come from the new data."
            )
        self.new = new
        self.old = old
        self.fraction = float(fraction)
        self.seed = check_seed(seed)
        self._num_new = batch_count(new, "new")
        self._num_old = batch_count(old, "old")
        check_same_structure([new[0], old[0]], ["new", "old"], check_batch_size=False)
        self._epoch = 0

    @property
    def num_batches(self):
        return self._num_new

    def __len__(self):
        return self._num_new

    def __getitem__(self, index):
        batch = self.new[index]
        leaves = keras.tree.flatten(batch)
        batch_size = len(leaves[0])
        k = int(round(self.fraction * batch_size))
        if k == 0:
            return batch
        rng = np.random.default_rng([self.seed, self._epoch, int(index)])
        replayed = []  # flattened old rows, one list per leaf
        while not replayed or len(replayed[0]) < k:
            old_leaves = keras.tree.flatten(self.old[int(rng.integers(self._num_old))])
            rows = rng.permutation(len(old_leaves[0]))[: k - (len(replayed[0]) if replayed else 0)]
            picked = [np.asarray(leaf)[rows] for leaf in old_leaves]
            replayed = picked if not replayed else [np.concatenate([a, b]) for a, b in zip(replayed, picked)]
        mixed = [
            np.concatenate([np.asarray(leaf)[: batch_size - k], np.asarray(old).astype(np.asarray(leaf).dtype)])
            for leaf, old in zip(leaves, replayed)
        ]
        return keras.tree.pack_sequence_as(batch, mixed)

    def on_epoch_end(self):
        self._epoch += 1
        for dataset in (self.new, self.old):
            if hasattr(dataset, "on_epoch_end"):
                dataset.on_epoch_end()
