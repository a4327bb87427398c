"""`MaskedLanguageModelingDataset`: BERT-style masked-token batches from a token stream."""

import numpy as np

from kerasllm.data.masking import mask_tokens
from kerasllm.data.windows import WindowedDataset, check_positive_int, cut_windows


class MaskedLanguageModelingDataset(WindowedDataset):
    """Batches `(inputs, labels)` for masked language modeling, cut from one long token stream.

    The stream is cut into non-overlapping windows of `sequence_length` tokens (the partial last batch is
    dropped). Each batch is corrupted with `kerasllm.data.mask_tokens`: labels hold the original id at
    selected positions and `kerasllm.data.IGNORE_INDEX` (-100) elsewhere. Masking is dynamic: it is drawn
    again every epoch, from a generator seeded by `(seed, epoch, batch index)`, so a run is reproducible
    and does not depend on the order in which workers fetch batches.

    Args:
        token_ids: 1-D array-like of int. The token stream.
        sequence_length: int. Tokens per example.
        batch_size: int. Examples per batch.
        mask_token_id: int. The mask id (`tokenizer.mask_token_id`).
        vocabulary_size: int. The vocabulary size (`tokenizer.vocabulary_size`).
        special_token_ids: list of int. Ids never masked nor drawn as replacements
            (`tokenizer.special_token_ids`). Defaults to `()`.
        mask_probability: float. The fraction of positions to predict. Defaults to `0.15`.
        shuffle: bool. Whether to shuffle the window order every epoch. Defaults to `True`.
        seed: int. The seed of the shuffling and masking. Defaults to `0`.
        dynamic_masking: bool. Whether to draw new masks every epoch; `False` keeps the masks of the
            first epoch, so validation losses stay comparable. Defaults to `True`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, `use_multiprocessing`,
            `max_queue_size`).

    Example:

    ```python
    train = kerasllm.data.MaskedLanguageModelingDataset(
        ids, sequence_length=128, batch_size=32, mask_token_id=tokenizer.mask_token_id,
        vocabulary_size=tokenizer.vocabulary_size, special_token_ids=tokenizer.special_token_ids,
    )
    inputs, labels = train[0]  # int32 arrays of shape (32, 128)
    ```

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
        - [Liu et al., 2019](https://arxiv.org/abs/1907.11692) (dynamic masking)
    """

    def __init__(
        self,
        token_ids,
        sequence_length,
        batch_size,
        mask_token_id,
        vocabulary_size,
        special_token_ids=(),
        mask_probability=0.15,
        shuffle=True,
        seed=0,
        dynamic_masking=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sequence_length = check_positive_int(sequence_length, "sequence_length")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.vocabulary_size = check_positive_int(vocabulary_size, "vocabulary_size")
        self.mask_token_id = mask_token_id
        self.special_token_ids = [int(i) for i in special_token_ids]
        self.mask_probability = mask_probability
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.dynamic_masking = bool(dynamic_masking)
        # (num_windows, sequence_length)
        self._windows = cut_windows(
            token_ids, self.sequence_length, self.batch_size, self.vocabulary_size,
            what=f"sequence_length={self.sequence_length} with batch_size={self.batch_size}",
        )
        self._start_epochs()
        mask_tokens(self._windows[:1], mask_token_id, self.vocabulary_size, mask_probability,
                    self.special_token_ids, seed=0)  # Fails now, not mid-epoch, on bad masking arguments.

    def __getitem__(self, index):
        index, rows = self._batch_rows(index)  # rows: (B, T)
        masking_epoch = self.epoch if self.dynamic_masking else 0
        rng = np.random.default_rng([self.seed, masking_epoch, int(index)])
        return mask_tokens(rows, self.mask_token_id, self.vocabulary_size, self.mask_probability,
                           self.special_token_ids, seed=rng)
