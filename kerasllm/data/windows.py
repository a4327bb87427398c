"""Helpers shared by the windowed datasets: argument checks, window cutting and epoch order."""

import keras
import numpy as np

from kerasllm.utils.validation import validate_token_ids


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, but got {value!r}.")
    return int(value)


def cut_windows(token_ids, window_length, batch_size, vocabulary_size, what):
    """Checks a 1-D id stream and cuts it into non-overlapping rows of `window_length` (a view)."""
    ids = validate_token_ids(token_ids, vocabulary_size=vocabulary_size, name="token_ids", ranks=(1,))
    ids = ids.astype(np.int32, copy=False)
    num_windows = len(ids) // window_length
    if num_windows < batch_size:
        needed = window_length * batch_size
        raise ValueError(
            f"The token stream has {len(ids)} tokens, too few for one batch: {what} needs "
            f"batch_size * {window_length} = {needed} tokens. Lower `batch_size` or `sequence_length`, or "
            "give more text."
        )
    return ids[: num_windows * window_length].reshape(num_windows, window_length)


def window_order(num_windows, shuffle, seed, epoch):
    """The window order of one epoch: a permutation fixed by `(seed, epoch)`, or `0, 1, ...`."""
    if not shuffle:
        return np.arange(num_windows)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_windows)


class WindowedDataset(keras.utils.PyDataset):
    """The epoch bookkeeping of kerasllm's window datasets: batches of `self._windows` rows in an order
    drawn per epoch, and a position that `kerasllm.callbacks.Checkpoint` can resume at.

    Subclasses set `_windows`, `batch_size`, `shuffle` and `seed`, call `_start_epochs()`, and build a
    batch from `self._batch_rows(index)` in `__getitem__`.
    """

    def _start_epochs(self):
        self.num_windows = len(self._windows)
        self.epoch = 0
        self.start_batch = 0
        self._order = window_order(self.num_windows, self.shuffle, self.seed, self.epoch)

    @property
    def windows(self):
        """Every window of the dataset, in corpus order (not the epoch's order): a read-only array view.

        For `LanguageModelingDataset` its shape is `(num_windows, sequence_length + 1)`: row `w` gives
        `x = w[:-1]` and `y = w[1:]`. Windows that do not fill a last batch are included.
        """
        view = self._windows.view()
        view.flags.writeable = False
        return view

    @property
    def batches_per_epoch(self):
        """Batches in a whole epoch (`len()` is less in an epoch resumed with `set_position`)."""
        return self.num_windows // self.batch_size

    def __len__(self):
        return self.batches_per_epoch - self.start_batch

    def set_position(self, epoch, batch=0):
        """Resumes at batch `batch` of epoch `epoch`: that epoch yields only its remaining batches.

        Used by `kerasllm.callbacks.Checkpoint`: until the next `on_epoch_end`, `len()` is
        `batches_per_epoch - batch` and index `i` gives the epoch's batch `batch + i`.
        """
        epoch, batch = int(epoch), int(batch)
        if epoch < 0 or not 0 <= batch < self.batches_per_epoch:
            raise ValueError(
                f"Cannot resume at epoch {epoch}, batch {batch}: the epoch must be >= 0 and the batch in "
                f"[0, {self.batches_per_epoch})."
            )
        self.epoch, self.start_batch = epoch, batch
        self._order = window_order(self.num_windows, self.shuffle, self.seed, self.epoch)

    def _batch_rows(self, index):
        """Returns `(batch_index_in_epoch, rows)` for the `index`-th batch that `len()` counts."""
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index {index} is out of range for {len(self)} batches.")
        index = self.start_batch + index
        return index, self._windows[self._order[index * self.batch_size : (index + 1) * self.batch_size]]

    def on_epoch_end(self):
        self.epoch += 1
        self.start_batch = 0
        self._order = window_order(self.num_windows, self.shuffle, self.seed, self.epoch)
