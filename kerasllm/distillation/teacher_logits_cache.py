"""Offline distillation, reading side: a teacher's cached top-k log-probabilities, memory-mapped from disk.

The cache is written by `kerasllm.distillation.cache_teacher_logits` (`cache_writer.py`)."""

import concurrent.futures
import hashlib
import json
import os

import keras
import numpy as np

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
        log_probs, indices = self._rows(token_ids)
        return log_probs.astype(np.float32), indices

    def _rows(self, token_ids):
        """`lookup` in the stored dtype (float16 halves what is copied to the device)."""
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
        return np.asarray(self._log_probs[rows]), np.asarray(self._indices[rows])

    def attach(self, dataset, prefetch=True):
        """Wraps a dataset so that each batch also carries the teacher's cached top-k.

        Batch `i` of the result is `({"token_ids": ids, "teacher_log_probs": lp, "teacher_indices": idx},
        y)` for `(x, y) = dataset[i]` (`x` an id array, or a dict with `"token_ids"` whose other entries,
        e.g. `"padding_mask"`, are kept; `y` and sample weights, when the dataset yields them, are
        unchanged). The teacher travels with the inputs, not the targets, so the model's compiled loss
        sees the labels it was compiled for; kerasllm models ignore the two extra entries and
        `kerasllm.callbacks.Distillation(cache)` reads them. The log-probabilities come in the cache's dtype
        (float16 or float32); the callback computes in float32. `len()`,
        `on_epoch_begin`, `on_epoch_end` and, where the dataset has them, `set_position`,
        `batches_per_epoch`, `vocabulary_size`, `sequence_length`, `batch_size` and `epoch` are those
        of the wrapped dataset, so shuffling and `kerasllm.callbacks.Checkpoint` resume work as before.

        Reading a batch's rows from the memory-mapped files takes time (5 to 50 ms for a top-512 batch of
        16 x 128 on this project's CPU machine, depending on whether the files are in the page cache), so
        while the model trains on batch `i` a background thread already reads batch `i + 1`. This is only
        done when Keras asks for batches one at a time (the dataset's `workers=1`, no multiprocessing;
        otherwise Keras's own workers read ahead), and the read-ahead batch is dropped when the epoch ends
        or `set_position` moves the dataset, so the batches are exactly those of `dataset[i]`.

        Args:
            dataset: `keras.utils.PyDataset` with a length, e.g. `kerasllm.data.LanguageModelingDataset`.
            prefetch: bool. Read the next batch in a background thread. Defaults to `True`.

        Returns:
            A `keras.utils.PyDataset`.
        """
        return _CachedTeacherDataset(self, dataset, prefetch)

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


def row_hashes(token_ids):
    """The 64-bit content key of each row of `(B, T)` ids: BLAKE2b of its little-endian int32 bytes."""
    ids = np.ascontiguousarray(token_ids, dtype="<i4")
    return np.array(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in ids],
        dtype=np.uint64,
    )


class _CachedTeacherDataset(keras.utils.PyDataset):
    """`TeacherLogitsCache.attach`: a dataset's batches with the teacher's cached top-k added to `x`."""

    _FORWARDED = ("set_position", "batches_per_epoch", "vocabulary_size", "sequence_length", "batch_size", "epoch")

    def __init__(self, cache, dataset, prefetch=True):
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
        if not isinstance(prefetch, bool):
            raise ValueError(f"`prefetch` must be True or False, but got {prefetch!r}.")
        super().__init__(
            workers=getattr(dataset, "workers", 1),
            use_multiprocessing=getattr(dataset, "use_multiprocessing", False),
            max_queue_size=getattr(dataset, "max_queue_size", 10),
        )
        self.cache = cache
        self.dataset = dataset
        # Keras's own workers read ahead when there are several; one reader thread here otherwise.
        self.prefetch = prefetch and self.workers == 1 and not self.use_multiprocessing
        self._reader = None  # a one-thread pool, made on first use
        self._ahead = None  # (index, future) of the batch being read ahead

    def __getattr__(self, name):
        # Called only for names the wrapper lacks: `hasattr(wrapper, "set_position")` is True exactly
        # when the wrapped dataset has it, which is what `kerasllm.callbacks.Checkpoint` asks.
        if name in _CachedTeacherDataset._FORWARDED and "dataset" in self.__dict__:
            attribute = getattr(self.__dict__["dataset"], name)
            if name == "set_position":  # moving the dataset makes the batch read ahead stale

                def set_position(*args, **kwargs):
                    self._drop_ahead()
                    return attribute(*args, **kwargs)

                return set_position
            return attribute
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        ahead = self._ahead
        if ahead is not None and ahead[0] == index:
            self._ahead = None
            batch = ahead[1].result()  # a reading error surfaces here, at the batch that hit it
        else:
            self._drop_ahead()
            batch = self._read(index)
        if self.prefetch and index + 1 < len(self):
            if self._reader is None:
                self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kerasllm-cache")
            self._ahead = (index + 1, self._reader.submit(self._read, index + 1))
        return batch

    def _drop_ahead(self):
        """Waits for a read-ahead that is no longer wanted and drops its result, or its error."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                ahead[1].result()
            except Exception:  # noqa: BLE001 - the batch is discarded; reading it again raises again
                pass

    def __getstate__(self):  # for multiprocessing workers: threads and futures do not pickle
        state = dict(self.__dict__)
        state["_reader"] = state["_ahead"] = None
        return state

    def _read(self, index):
        batch = self.dataset[index]
        parts = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        x = parts[0]
        inputs = dict(x) if isinstance(x, dict) else {"token_ids": x}
        inputs["teacher_log_probs"], inputs["teacher_indices"] = self.cache._rows(inputs["token_ids"])
        return (inputs, *parts[1:])

    def on_epoch_begin(self):
        self._drop_ahead()
        if hasattr(self.dataset, "on_epoch_begin"):
            self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self._drop_ahead()
        if hasattr(self.dataset, "on_epoch_end"):
            self.dataset.on_epoch_end()


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
