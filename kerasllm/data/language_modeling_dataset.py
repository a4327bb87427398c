"""`LanguageModelingDataset`: next-token prediction batches from a token stream."""

import numpy as np

from kerasllm.data.windows import WindowedDataset, check_positive_int, cut_windows


class LanguageModelingDataset(WindowedDataset):
    """Batches `(x, y)` for next-token prediction, cut from one long token stream.

    The stream is cut into non-overlapping windows of `sequence_length + 1` tokens; a window `w` gives
    `x = w[:-1]` and `y = w[1:]`. Windows that do not fill a whole batch at the end are dropped. With
    `shuffle=True` the window order is a new permutation every epoch (drawn in `on_epoch_end`), fixed by
    `seed` and the epoch number. Keras ends the epoch also when `fit` stops early (`stop_training`,
    `steps_per_epoch`), so a second `fit` on the same dataset continues with the next epoch's order;
    call `set_position(0)` to replay the same batches. Ids are checked once, here, so bad ids fail before
    training starts.

    Args:
        token_ids: 1-D array-like of int. The token stream (e.g. from `kerasllm.data.pack_documents`).
        sequence_length: int. Tokens per example.
        batch_size: int. Examples per batch.
        shuffle: bool. Whether to shuffle the window order every epoch. Defaults to `True`.
        seed: int. The seed of the shuffling. Defaults to `0`.
        vocabulary_size: int. If given, ids must be below it. Defaults to `None` (not checked).
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`,
            `max_queue_size`).

    Example:

    ```python
    ids = tokenizer.encode(kerasllm.datasets.shakespeare())
    train = kerasllm.data.LanguageModelingDataset(ids, sequence_length=128, batch_size=32,
                                                  vocabulary_size=tokenizer.vocabulary_size)
    x, y = train[0]  # int32 arrays of shape (32, 128); y[:, :-1] == x[:, 1:]
    model.fit(train, epochs=2)
    ```
    """

    def __init__(
        self, token_ids, sequence_length, batch_size, shuffle=True, seed=0, vocabulary_size=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.sequence_length = check_positive_int(sequence_length, "sequence_length")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.vocabulary_size = (
            None if vocabulary_size is None else check_positive_int(vocabulary_size, "vocabulary_size")
        )
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        # (num_windows, sequence_length + 1)
        self._windows = cut_windows(
            token_ids, self.sequence_length + 1, self.batch_size, self.vocabulary_size,
            what=(
                f"sequence_length={self.sequence_length} (+1 for the shifted labels) with "
                f"batch_size={self.batch_size}"
            ),
        )
        self._start_epochs()

    def __getitem__(self, index):
        _, rows = self._batch_rows(index)
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])  # (B, T), (B, T)
