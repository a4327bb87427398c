"""Offline distillation: a teacher's top-k log-probabilities, computed once and memory-mapped from disk."""

import hashlib
import json
import os

import keras
import numpy as np

from kerasllm.distillation.teacher_inputs import input_names
from kerasllm.distillation.teacher_inputs import teacher_inputs
from kerasllm.utils.atomic import atomic_directory

FORMAT_VERSION = 1
CONFIG_FILE = "cache.json"
LOG_PROBS_FILE = "log_probs.npy"
INDICES_FILE = "indices.npy"
HASHES_FILE = "hashes.npy"
DTYPES = ("float32", "float16")
_CONFIG_KEYS = ("format_version", "top_k", "vocabulary_size", "sequence_length", "num_sequences", "dtype")


class TeacherLogitsCache:
    """A teacher's top-k log-probabilities for every row of a dataset, memory-mapped from a folder.

    Made by `kerasllm.distillation.cache_teacher_logits`, reopened with `TeacherLogitsCache.load`. Rows
    are keyed by their content (a 64-bit BLAKE2b hash of the row's int32 token ids), so `lookup` finds
    a row whatever batch, order, shuffle or epoch it comes in. The arrays stay on disk
    (`mmap_mode="r"`); only the rows asked for are read. A cache can be pickled (it reopens by path),
    so `attach` also works with `use_multiprocessing=True`.

    The folder holds `log_probs.npy` `(N, T, k)` (float32 or float16), `indices.npy` `(N, T, k)` int32,
    `hashes.npy` `(N,)` uint64 and `cache.json` (`top_k`, `vocabulary_size`, `sequence_length`,
    `num_sequences`, `dtype`, `format_version`, `teacher`).

    Args:
        path: str. The cache folder.

    Example:

    ```python
    cache = kerasllm.distillation.TeacherLogitsCache.load("teacher_cache")
    log_probs, indices = cache.lookup(x)  # x: int token ids (B, T) -> two (B, T, k) arrays
    student.fit(cache.attach(train), epochs=3)
    ```
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.path):
            raise ValueError(
                f"No teacher-logits cache at {self.path}: the folder does not exist. Create one with "
                "`kerasllm.distillation.cache_teacher_logits(teacher, dataset, top_k, path)`."
            )
        config = _read_config(os.path.join(self.path, CONFIG_FILE))
        self.top_k = config["top_k"]
        self.vocabulary_size = config["vocabulary_size"]
        self.sequence_length = config["sequence_length"]
        self.num_sequences = config["num_sequences"]
        self.dtype = config["dtype"]
        self.teacher = config.get("teacher")
        shape = (self.num_sequences, self.sequence_length, self.top_k)
        self._log_probs = _open_array(self.path, LOG_PROBS_FILE, shape, self.dtype)
        self._indices = _open_array(self.path, INDICES_FILE, shape, "int32")
        hashes = _open_array(self.path, HASHES_FILE, (self.num_sequences,), "uint64")
        # A sorted copy of the hashes is the index: `searchsorted` finds a whole batch at once and
        # takes 16 bytes a row in memory, where a dict would take ~100.
        self._order = np.argsort(hashes, kind="stable")
        self._sorted_hashes = np.asarray(hashes[self._order])
        if len(self._sorted_hashes) > 1 and np.any(self._sorted_hashes[1:] == self._sorted_hashes[:-1]):
            raise ValueError(
                f"{os.path.join(self.path, HASHES_FILE)} lists a row twice, so the cache is corrupt. "
                "Delete the folder and cache the dataset again."
            )

    @classmethod
    def load(cls, path):
        """Opens the cache in the folder `path`, memory-mapped.

        Args:
            path: str. A folder written by `kerasllm.distillation.cache_teacher_logits`.

        Returns:
            A `TeacherLogitsCache`.

        Raises:
            ValueError: if a file is missing or corrupt, naming the file.
        """
        return cls(path)

    def lookup(self, token_ids):
        """The teacher's top-k log-probabilities and token ids for these rows.

        Args:
            token_ids: int array of shape `(B, T)`, `T == sequence_length`, rows from the cached data.

        Returns:
            A tuple `(log_probs, indices)`: float32 `(B, T, k)` log-softmax values at temperature 1,
            sorted descending along the last axis, and the int32 `(B, T, k)` token ids they belong to.

        Raises:
            ValueError: if the shape is wrong or a row was never cached.
        """
        ids = np.asarray(token_ids)
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 2:
            raise ValueError(
                f"`token_ids` must be an int array of shape (batch, {self.sequence_length}), but got dtype "
                f"{ids.dtype} and shape {ids.shape}."
            )
        if ids.shape[1] != self.sequence_length:
            raise ValueError(
                f"`token_ids` have sequence length {ids.shape[1]}, but the teacher-logits cache at "
                f"{self.path} was built with sequence_length {self.sequence_length}. Use data of the same "
                "sequence length, or cache the teacher on this dataset."
            )
        rows = self._find(row_hashes(ids))
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            raise ValueError(
                f"{len(missing)} of {len(ids)} rows of this batch (first: row {missing[0]}) are not in the "
                f"teacher-logits cache at {self.path}: the dataset differs from the one cached. Cache this "
                "dataset with `kerasllm.distillation.cache_teacher_logits`, or build it with the same "
                "tokenizer, sequence length and split as the cached one."
            )
        return self._log_probs[rows].astype(np.float32), np.asarray(self._indices[rows])

    def attach(self, dataset):
        """Wraps a dataset so that each batch also carries the teacher's cached top-k.

        Batch `i` of the result is `({"token_ids": ids, "teacher_log_probs": lp, "teacher_indices": idx},
        y)` for `(x, y) = dataset[i]` (`x` an id array, or a dict with `"token_ids"` whose other entries,
        e.g. `"padding_mask"`, are kept; `y` and sample weights, when the dataset yields them, are
        unchanged). The teacher travels with the inputs, not the targets, so the model's compiled loss
        sees the labels it was compiled for; kerasllm models ignore the two extra entries and
        `kerasllm.callbacks.Distillation(cache)` reads them. `len()`,
        `on_epoch_begin`, `on_epoch_end` and, where the dataset has them, `set_position`,
        `batches_per_epoch`, `vocabulary_size`, `sequence_length`, `batch_size` and `epoch` are those
        of the wrapped dataset, so shuffling and `kerasllm.callbacks.Checkpoint` resume work as before.

        Args:
            dataset: `keras.utils.PyDataset` with a length, e.g. `kerasllm.data.LanguageModelingDataset`.

        Returns:
            A `keras.utils.PyDataset`.
        """
        return _CachedTeacherDataset(self, dataset)

    def _find(self, hashes):
        """Row numbers of `hashes` in the arrays, `-1` where absent."""
        if not len(self._sorted_hashes):
            return np.full(len(hashes), -1, dtype=np.int64)
        positions = np.minimum(np.searchsorted(self._sorted_hashes, hashes), len(self._sorted_hashes) - 1)
        found = self._sorted_hashes[positions] == hashes
        return np.where(found, self._order[positions], -1)

    def __reduce__(self):
        # Memory maps do not pickle by reference: reopen from the folder in the other process.
        return (type(self).load, (self.path,))

    def __repr__(self):
        return (
            f"TeacherLogitsCache(path={self.path!r}, num_sequences={self.num_sequences}, "
            f"sequence_length={self.sequence_length}, top_k={self.top_k}, "
            f"vocabulary_size={self.vocabulary_size}, dtype={self.dtype!r})"
        )


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


def row_hashes(token_ids):
    """The 64-bit content key of each row of `(B, T)` ids: BLAKE2b of its little-endian int32 bytes."""
    ids = np.ascontiguousarray(token_ids, dtype="<i4")
    return np.array(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in ids],
        dtype=np.uint64,
    )


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


class _CachedTeacherDataset(keras.utils.PyDataset):
    """`TeacherLogitsCache.attach`: a dataset's batches with the teacher's cached top-k added to `x`."""

    _FORWARDED = ("set_position", "batches_per_epoch", "vocabulary_size", "sequence_length", "batch_size", "epoch")

    def __init__(self, cache, dataset):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ValueError(
                f"`attach` needs an indexable dataset with a length (a keras.utils.PyDataset such as "
                f"kerasllm.data.LanguageModelingDataset), but got {type(dataset).__name__}."
            )
        sequence_length = getattr(dataset, "sequence_length", None)
        if isinstance(sequence_length, int) and sequence_length != cache.sequence_length:
            raise ValueError(
                f"The dataset yields sequences of length {sequence_length}, but the teacher-logits cache at "
                f"{cache.path} holds length {cache.sequence_length}. Cache the teacher on this dataset."
            )
        super().__init__(
            workers=getattr(dataset, "workers", 1),
            use_multiprocessing=getattr(dataset, "use_multiprocessing", False),
            max_queue_size=getattr(dataset, "max_queue_size", 10),
        )
        self.cache = cache
        self.dataset = dataset

    def __getattr__(self, name):
        # Called only for names the wrapper lacks: `hasattr(wrapper, "set_position")` is True exactly
        # when the wrapped dataset has it, which is what `kerasllm.callbacks.Checkpoint` asks.
        if name in _CachedTeacherDataset._FORWARDED and "dataset" in self.__dict__:
            return getattr(self.__dict__["dataset"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        batch = self.dataset[index]
        parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        x = parts[0]
        inputs = dict(x) if isinstance(x, dict) else {"token_ids": x}
        inputs["teacher_log_probs"], inputs["teacher_indices"] = self.cache.lookup(inputs["token_ids"])
        return (inputs, *parts[1:])

    def on_epoch_begin(self):
        if hasattr(self.dataset, "on_epoch_begin"):
            self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        if hasattr(self.dataset, "on_epoch_end"):
            self.dataset.on_epoch_end()


def _batches(dataset):
    """An iterator over the batches to cache and their number (`None` if unknown)."""
    from kerasllm.data.masked_language_modeling_dataset import MaskedLanguageModelingDataset

    if isinstance(dataset, MaskedLanguageModelingDataset) and (dataset.shuffle or dataset.dynamic_masking):
        raise ValueError(
            "This MaskedLanguageModelingDataset masks rows differently in every epoch (shuffle or dynamic "
            "masking), so cached rows would not be found again. Build it with `shuffle=False, "
            "dynamic_masking=False`, or distil online with `kerasllm.callbacks.Distillation`."
        )
    windows = getattr(dataset, "_windows", None)
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


def _read_config(file):
    try:
        with open(file) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"{file} is missing, so this is not a complete teacher-logits cache. Create it with "
            "`kerasllm.distillation.cache_teacher_logits`."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{file} is corrupt ({error}). Delete the folder and cache the teacher again.") from None
    if not isinstance(config, dict) or any(key not in config for key in _CONFIG_KEYS):
        raise ValueError(
            f"{file} is corrupt: it must be a JSON object with the keys {list(_CONFIG_KEYS)}. Delete the folder "
            "and cache the teacher again."
        )
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{file} has format_version {config['format_version']!r}; this kerasllm reads version "
            f"{FORMAT_VERSION}. Cache the teacher again with this kerasllm."
        )
    for key in ("top_k", "vocabulary_size", "sequence_length", "num_sequences"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "num_sequences" else 1):
            raise ValueError(f"{file} is corrupt: `{key}` is {value!r}. Delete the folder and cache the teacher again.")
    if config["dtype"] not in DTYPES or config["top_k"] > config["vocabulary_size"]:
        raise ValueError(
            f"{file} is corrupt: dtype {config['dtype']!r}, top_k {config['top_k']}, vocabulary_size "
            f"{config['vocabulary_size']}. Delete the folder and cache the teacher again."
        )
    return config


def _open_array(folder, name, shape, dtype):
    file = os.path.join(folder, name)
    if not os.path.exists(file):
        raise ValueError(f"{file} is missing: the teacher-logits cache is incomplete. Cache the teacher again.")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(
            f"{file} is corrupt or truncated ({error}). Delete the folder and cache the teacher again."
        ) from None
    if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ValueError(
            f"{file} holds an array of shape {array.shape} and dtype {array.dtype}, but {CONFIG_FILE} says "
            f"{tuple(shape)} {dtype}. The cache is corrupt: delete the folder and cache the teacher again."
        )
    return array
