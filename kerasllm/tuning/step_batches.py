"""The data of a trial: token windows re-batched to the trial's batch size, a fixed number of steps per epoch."""

import keras
import numpy as np

from kerasllm.data.language_modeling_dataset import LanguageModelingDataset
from kerasllm.data.windows import check_positive_int, cut_windows, window_order


def token_windows(data, sequence_length=None, what="train_data"):
    """Returns `(windows, vocabulary_size)`: rows of `sequence_length + 1` tokens from `data`.

    `data` is a `kerasllm.data.LanguageModelingDataset` (its windows and vocabulary are kept) or a 1-D
    array of token ids (cut into windows of `sequence_length + 1`).
    """
    if isinstance(data, LanguageModelingDataset):
        if sequence_length is not None and sequence_length != data.sequence_length:
            raise ValueError(
                f"`sequence_length={sequence_length}` differs from the {what} dataset's "
                f"sequence_length={data.sequence_length}. Leave `sequence_length` unset for datasets."
            )
        return data.windows, data.vocabulary_size
    if isinstance(data, keras.utils.PyDataset) or isinstance(data, (tuple, dict)):
        raise ValueError(
            f"`{what}` must be a `kerasllm.data.LanguageModelingDataset` or a 1-D array of token ids, but got "
            f"{type(data).__name__}. Build one with `kerasllm.data.language_modeling_splits(text, tokenizer)`."
        )
    if sequence_length is None:
        raise ValueError(
            f"`{what}` is an array of token ids, so the windows need a length: pass `sequence_length=` "
            "(tokens per training example)."
        )
    length = check_positive_int(sequence_length, "sequence_length")
    windows = cut_windows(data, length + 1, 1, None, what=f"{what} with sequence_length={length}")
    return windows, None


def validation_inputs(data, sequence_length=None):
    """Validation data as `fit` takes it: a dataset unchanged, a token stream as `(x, y)` arrays.

    Validation keeps one batching for every trial, so all trials are scored on the same windows.
    """
    if data is None:
        raise ValueError(
            "A search needs `validation_data`: trials are ranked by validation loss. Hold out part of the "
            "text, e.g. with `kerasllm.data.language_modeling_splits(text, tokenizer, validation_fraction=0.1)`."
        )
    if isinstance(data, LanguageModelingDataset):
        return data
    windows, _ = token_windows(data, sequence_length, what="validation_data")
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


class StepBatches(keras.utils.PyDataset):
    """`(x, y)` batches of `batch_size` windows, `steps` per epoch, cycling through shuffled windows.

    Batch `i` of epoch `e` is global batch `e * steps + i`: the windows are visited in a permutation
    drawn per pass (fixed by `seed` and the pass number), so a trial resumed at a later epoch
    (Hyperband) continues the same data order.
    """

    def __init__(self, windows, batch_size, steps, seed=0, vocabulary_size=None, initial_epoch=0):
        super().__init__()
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.steps = check_positive_int(steps, "steps")
        if len(windows) < self.batch_size:
            raise ValueError(
                f"The training data has {len(windows)} windows, fewer than one batch of batch_size="
                f"{self.batch_size}. Use smaller batch sizes in the search space, or give more text."
            )
        self.windows = windows
        self.seed = int(seed)
        self.vocabulary_size = vocabulary_size  # lets the model check the data against its vocabulary
        self.sequence_length = windows.shape[1] - 1
        self.epoch = int(initial_epoch)
        self._pass, self._order = None, None

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        per_pass = len(self.windows) // self.batch_size
        step = self.epoch * self.steps + index
        data_pass, batch = divmod(step, per_pass)
        if data_pass != self._pass:
            self._pass, self._order = data_pass, window_order(len(self.windows), True, self.seed, data_pass)
        rows = self.windows[self._order[batch * self.batch_size : (batch + 1) * self.batch_size]]
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])  # (B, T), (B, T)

    def on_epoch_end(self):
        self.epoch += 1
