"""Offline distillation, writing side: runs a teacher once and stores its top-k log-probabilities."""

import json
import os

import keras
import numpy as np

from kerasllm.distillation.teacher_inputs import input_names
from kerasllm.distillation.teacher_inputs import teacher_inputs
from kerasllm.distillation.teacher_logits_cache import CONFIG_FILE
from kerasllm.distillation.teacher_logits_cache import DTYPES
from kerasllm.distillation.teacher_logits_cache import FORMAT_VERSION
from kerasllm.distillation.teacher_logits_cache import HASHES_FILE
from kerasllm.distillation.teacher_logits_cache import INDICES_FILE
from kerasllm.distillation.teacher_logits_cache import LOG_PROBS_FILE
from kerasllm.distillation.teacher_logits_cache import TeacherLogitsCache
from kerasllm.distillation.teacher_logits_cache import row_hashes
from kerasllm.utils.atomic import atomic_directory


def cache_teacher_logits(teacher, dataset, top_k, path, dtype="float32", overwrite=False, verbose=1):
    """Runs a teacher once over a dataset and stores its top-k log-probabilities on disk.

    Offline distillation: the teacher is needed only here; training later reads its predictions from
    the returned cache (`cache.attach(train)`), memory-mapped, with no teacher in memory. For each row
    and position the cache keeps the `top_k` largest `log_softmax(logits)` values (temperature 1,
    sorted descending) and their token ids; `top_k == vocabulary_size` keeps the whole distribution.

    The dataset is walked once, in order. A `kerasllm.data.LanguageModelingDataset` is walked over
    all of its windows, including those a shuffled epoch leaves out of its last partial batch, so
    every epoch's batches are found. Rows are keyed by content; identical rows share one entry.
    The folder is written atomically (a temporary sibling, fsynced, then renamed): it appears
    complete or not at all.

    Args:
        teacher: built `keras.Model` mapping the batches' `x` to logits `(B, T, V)`, e.g. a
            `kerasllm.models.CausalLM` or KerasHub's `GPT2CausalLM` (dict-input models get
            `{"token_ids": x, "padding_mask": ones}` when `x` is an id array).
        dataset: `keras.utils.PyDataset` or iterable of batches `x`, `(x,)`, `(x, y)` or `(x, y, w)`,
            with `x` an int array `(B, T)` or a dict with `"token_ids"` (and optionally
            `"padding_mask"`). Every batch has the same `T`.
        top_k: int in `[1, V]`. Log-probabilities kept per position.
        path: str. The folder to write.
        dtype: str. `"float32"` or `"float16"` (half the disk; `lookup` returns float32 either way).
            Defaults to `"float32"`.
        overwrite: bool. Whether to replace an existing cache at `path`. Defaults to `False`.
        verbose: int. `0` silent, `1` a progress bar. Defaults to `1`.

    Returns:
        A `kerasllm.distillation.TeacherLogitsCache` on `path`.

    Example:

    ```python
    train = kerasllm.data.LanguageModelingDataset(ids, sequence_length=128, batch_size=32)
    cache = kerasllm.distillation.cache_teacher_logits(teacher, train, top_k=64, path="teacher_cache")
    del teacher  # training needs only the cache
    student.fit(cache.attach(train), epochs=3)
    ```

    References:
        - [Hinton et al., 2015, Distilling the Knowledge in a Neural Network](https://arxiv.org/abs/1503.02531)
    """
    if not isinstance(teacher, keras.Model):
        raise ValueError(f"`teacher` must be a keras.Model, but got {type(teacher).__name__}.")
    if not teacher.built:
        raise ValueError("The teacher is not built: call it once on a batch (or load a trained one) first.")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(
            f"`top_k` must be an int >= 1 (at most the vocabulary size), but got {top_k!r}. Use the "
            "vocabulary size to keep the whole distribution."
        )
    top_k = int(top_k)
    if dtype not in DTYPES:
        raise ValueError(
            f"`dtype` must be 'float32' or 'float16' (half the disk), but got {dtype!r}."
        )
    path = os.path.abspath(os.fspath(path))
    _check_destination(path, overwrite)
    names = input_names(teacher)
    batches, num_batches = _batches(dataset)
    progress = keras.utils.Progbar(num_batches, unit_name="batch") if verbose else None

    sequence_length = vocabulary_size = None
    with atomic_directory(path) as temp:
        writer = None
        seen = set()
        for step, batch in enumerate(batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            ids = _token_ids(x, step)
            if sequence_length is None:
                sequence_length = ids.shape[1]
            elif ids.shape[1] != sequence_length:
                raise ValueError(
                    f"Batch {step} has sequence length {ids.shape[1]}, but batch 0 had {sequence_length}: a "
                    "cache holds one sequence length. Cut the data into windows of one length."
                )
            hashes = row_hashes(ids)
            new = []
            for row, value in enumerate(hashes.tolist()):
                if value not in seen:
                    seen.add(value)
                    new.append(row)
            if new:
                logits = teacher.predict_on_batch(teacher_inputs(x if isinstance(x, dict) else ids, teacher, names))
                logits = _as_logits(logits, ids.shape, step)
                if vocabulary_size is None:
                    vocabulary_size = logits.shape[-1]
                    if top_k > vocabulary_size:
                        raise ValueError(
                            f"`top_k` is {top_k}, more than the teacher's vocabulary of {vocabulary_size} "
                            f"tokens. Use a top_k in [1, {vocabulary_size}]; {vocabulary_size} keeps the "
                            "whole distribution."
                        )
                    writer = _Writer(temp, sequence_length, top_k, dtype, _capacity(num_batches, len(ids)))
                new = np.asarray(new)
                log_probs, indices = top_k_log_softmax(logits[new], top_k)
                if np.isnan(log_probs).any():
                    raise ValueError(
                        f"The teacher's logits for batch {step} hold NaN. Check the teacher's weights (e.g. "
                        "load it in float32) before caching."
                    )
                writer.append(hashes[new], log_probs, indices)
            if progress is not None:
                progress.update(step + 1)
        if writer is None:
            raise ValueError(
                "The dataset is empty: there is nothing to cache. Give a dataset with at least one batch."
            )
        writer.close()
        config = {
            "format_version": FORMAT_VERSION,
            "top_k": top_k,
            "vocabulary_size": int(vocabulary_size),
            "sequence_length": int(sequence_length),
            "num_sequences": writer.count,
            "dtype": dtype,
            "teacher": type(teacher).__name__,
        }
        with open(os.path.join(temp, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2)
    return TeacherLogitsCache.load(path)


def top_k_log_softmax(logits, top_k):
    """Top-k of `log_softmax(logits)` on the last axis, sorted descending: `(values float32, ids int32)`."""
    logits = np.asarray(logits, dtype=np.float32)
    maximum = np.max(logits, axis=-1, keepdims=True)
    shifted = logits - maximum
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))  # (B, T, V)
    if top_k < log_probs.shape[-1]:
        indices = np.argpartition(-log_probs, top_k - 1, axis=-1)[..., :top_k]
    else:
        indices = np.broadcast_to(np.arange(log_probs.shape[-1]), log_probs.shape)
    values = np.take_along_axis(log_probs, indices, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    return np.take_along_axis(values, order, axis=-1), np.take_along_axis(indices, order, axis=-1).astype(np.int32)


class _Writer:
    """Appends rows to `.npy` files through `open_memmap`, growing them when full, trimmed at `close`."""

    def __init__(self, folder, sequence_length, top_k, dtype, capacity):
        self.folder = folder
        self.count = 0
        self.specs = {
            LOG_PROBS_FILE: ((sequence_length, top_k), dtype),
            INDICES_FILE: ((sequence_length, top_k), "int32"),
            HASHES_FILE: ((), "uint64"),
        }
        self.arrays = {name: self._open(name, capacity) for name in self.specs}

    def _open(self, name, rows, suffix=""):
        shape, dtype = self.specs[name]
        return np.lib.format.open_memmap(
            os.path.join(self.folder, name + suffix), mode="w+", dtype=dtype, shape=(rows, *shape)
        )

    def _resize(self, rows):
        for name, old in self.arrays.items():
            new = self._open(name, rows, suffix=".resized")
            for start in range(0, self.count, 4096):
                stop = min(start + 4096, self.count)
                new[start:stop] = old[start:stop]
            new.flush()
            del old
            self.arrays[name] = None
            os.replace(os.path.join(self.folder, name + ".resized"), os.path.join(self.folder, name))
            self.arrays[name] = np.lib.format.open_memmap(os.path.join(self.folder, name), mode="r+")

    def append(self, hashes, log_probs, indices):
        end = self.count + len(hashes)
        capacity = len(self.arrays[HASHES_FILE])
        if end > capacity:
            self._resize(max(end, 2 * capacity))
        for name, rows in ((HASHES_FILE, hashes), (LOG_PROBS_FILE, log_probs), (INDICES_FILE, indices)):
            self.arrays[name][self.count : end] = rows
        self.count = end

    def close(self):
        if self.count != len(self.arrays[HASHES_FILE]):
            self._resize(self.count)
        for array in self.arrays.values():
            array.flush()
        self.arrays = {}


def _batches(dataset):
    """An iterator over the batches to cache and their number (`None` if unknown)."""
    from kerasllm.data.masked_language_modeling_dataset import MaskedLanguageModelingDataset

    if isinstance(dataset, MaskedLanguageModelingDataset) and (dataset.shuffle or dataset.dynamic_masking):
        raise ValueError(
            "This MaskedLanguageModelingDataset masks rows differently in every epoch (shuffle or dynamic "
            "masking), so cached rows would not be found again. Build it with `shuffle=False, "
            "dynamic_masking=False`, or distil online with `kerasllm.callbacks.Distillation`."
        )
    windows = getattr(dataset, "windows", None)
    if _is_language_modeling_dataset(dataset) and windows is not None:
        # Every window, in storage order, in batches of the dataset's size; a shuffled epoch drops a
        # different partial batch each epoch, so walking one epoch would miss rows later epochs use.
        batch_size = dataset.batch_size
        starts = range(0, len(windows), batch_size)

        def batches():
            for start in starts:
                rows = windows[start : start + batch_size, :-1]
                if len(rows) < batch_size:
                    # Filled up with already cached rows (skipped as duplicates): one batch shape, so
                    # a compiled teacher is not traced again for the last batch.
                    rows = np.concatenate([rows, windows[: batch_size - len(rows), :-1]])
                yield np.ascontiguousarray(rows)

        return batches(), len(starts)
    if isinstance(dataset, keras.utils.PyDataset):
        num_batches = dataset.num_batches
        if num_batches is None:
            raise ValueError(
                "The dataset has no length (an infinite PyDataset), so it cannot be walked once. Give a "
                "dataset with `__len__`."
            )
        return (dataset[i] for i in range(num_batches)), num_batches
    try:
        iterator = iter(dataset)
    except TypeError:
        raise ValueError(
            f"`dataset` must be a keras.utils.PyDataset or an iterable of batches, but got "
            f"{type(dataset).__name__}."
        ) from None
    try:
        num_batches = len(dataset)
    except TypeError:
        num_batches = None
    return iterator, num_batches


def _is_language_modeling_dataset(dataset):
    from kerasllm.data.language_modeling_dataset import LanguageModelingDataset

    return isinstance(dataset, LanguageModelingDataset)


def _token_ids(x, step):
    if isinstance(x, dict):
        if "token_ids" not in x:
            raise ValueError(
                f"Batch {step}: dict inputs must have a 'token_ids' entry, but got keys {sorted(x)}."
            )
        x = x["token_ids"]
    # `.numpy()`: tf and torch tensors from another framework's data pipeline.
    ids = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 2:
        raise ValueError(
            f"Batch {step}: token ids must be an int array of shape (batch, sequence), but got dtype "
            f"{ids.dtype} and shape {ids.shape}. Tokenize text first, or cast whole-number ids with "
            "`.astype('int32')`."
        )
    return ids


def _as_logits(outputs, ids_shape, step):
    shape = getattr(outputs, "shape", None)
    if shape is None or len(shape) != 3 or tuple(shape[:2]) != tuple(ids_shape):
        described = tuple(shape) if shape is not None else type(outputs).__name__
        raise ValueError(
            f"The teacher must map token ids {tuple(ids_shape)} to one logits tensor (batch, sequence, "
            f"vocabulary), but for batch {step} it returned {described}. Give a model that outputs logits, "
            "e.g. a kerasllm.models.CausalLM."
        )
    return np.asarray(keras.ops.convert_to_numpy(outputs)).astype(np.float32, copy=False)


def _capacity(num_batches, batch_rows):
    return max(1, (num_batches or 16) * batch_rows)


def _check_destination(path, overwrite):
    if os.path.isfile(path):
        raise ValueError(f"{path} is a file; give a folder path for the teacher-logits cache.")
    if not os.path.isdir(path) or not os.listdir(path):
        return
    if not os.path.exists(os.path.join(path, CONFIG_FILE)):
        raise ValueError(
            f"{path} is a folder with other files, not a teacher-logits cache; it is not replaced. Give a new "
            "or empty folder."
        )
    if not overwrite:
        raise ValueError(
            f"A teacher-logits cache already exists at {path}. Open it with "
            "`kerasllm.distillation.TeacherLogitsCache.load(path)`, or pass `overwrite=True` to replace it."
        )
