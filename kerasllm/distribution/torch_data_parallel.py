"""Data parallelism on PyTorch: `model.fit` in every `torch.distributed` process, gradients averaged across them."""

import os
import weakref

import keras
import numpy as np

from kerasllm.utils import backend_distribution

# The models that currently average their gradients, so that hooks are never registered twice.
_ACTIVE = weakref.WeakKeyDictionary()


def _require_torch(name):
    backend = keras.backend.backend()
    if backend != "torch":
        raise ValueError(
            f"{name} needs the torch backend, and the backend is {backend!r}. Set KERAS_BACKEND=torch, or use "
            "kerasllm.distribution.data_parallel() on JAX and kerasllm.distribution.mirrored_strategy() on "
            "TensorFlow."
        )


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def init_process_group(rank=None, world_size=None, address=None, port=None, backend=None, timeout_seconds=300):
    """Joins this process to a `torch.distributed` group, from arguments or from `torchrun`'s environment.

    Every process of the job calls it with its own `rank`; it returns once all `world_size` have joined.
    Under `torchrun` the arguments can be left out (it sets `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and
    `MASTER_PORT`). If the group already exists, nothing is done.

    Args:
        rank: int. This process's index, `0 <= rank < world_size`. Defaults to `$RANK`.
        world_size: int. Number of processes. Defaults to `$WORLD_SIZE`.
        address: str. Host of process 0, reachable by every process. Defaults to `$MASTER_ADDR`, else
            `"127.0.0.1"`.
        port: int. A free port on that host. Defaults to `$MASTER_PORT`, else 29500.
        backend: str. `"gloo"` (CPU) or `"nccl"` (CUDA GPUs). Defaults to `"nccl"` when CUDA is available,
            else `"gloo"`.
        timeout_seconds: int. How long to wait for the other processes. Defaults to 300.

    Returns:
        `(rank, world_size)`.

    Example:

    >>> rank, world_size = kerasllm.distribution.init_process_group()  # under torchrun
    """
    _require_torch("init_process_group")
    existing = backend_distribution.torch_process_group()
    if existing is not None:
        return existing
    if rank is None and "RANK" not in os.environ or world_size is None and "WORLD_SIZE" not in os.environ:
        raise ValueError(
            "init_process_group needs this process's rank and the world size: pass `rank=` and `world_size=`, "
            "or start the script with torchrun (e.g. `torchrun --nproc-per-node 2 train.py`), which sets RANK "
            "and WORLD_SIZE."
        )
    world_size = _positive_int(int(os.environ["WORLD_SIZE"]) if world_size is None else world_size, "world_size")
    rank = int(os.environ["RANK"]) if rank is None else rank
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, {world_size}) for world_size={world_size}, got {rank!r}.")
    address = address or os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = _positive_int(int(os.environ.get("MASTER_PORT", 29500)) if port is None else port, "port")
    backend = backend or backend_distribution.torch_default_backend()
    backend_distribution.torch_init_process_group(backend, int(rank), world_size, address, port, timeout_seconds)
    return int(rank), world_size


def torch_data_parallel(model, source_rank=0):
    """Makes `model.fit` train data-parallel across the `torch.distributed` processes (torch only).

    Copies process `source_rank`'s weights to every process, then registers hooks that replace each
    gradient by its mean over the processes as soon as autograd computes it, before Keras's optimizer
    applies it; this is the mechanism of `torch.nn.parallel.DistributedDataParallel`, which cannot wrap a
    Keras model's `fit`. Each process then calls `model.fit` on its own shard of every global batch
    (`TorchDataParallel.shard`) with the per-process batch size (`TorchDataParallel.local_batch_size`); the
    updates equal those of one process training on the global batches, provided the loss is a mean over
    equally many examples (or tokens) per process.

    Call it after the model is built (kerasllm models are built on creation) and before training.

    Args:
        model: a built `keras.Model`.
        source_rank: int. The process whose initial weights every process takes. Defaults to 0.

    Returns:
        A `kerasllm.distribution.TorchDataParallel`; its `close()` removes the hooks.

    Example:

    >>> kerasllm.distribution.init_process_group()  # under torchrun
    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=512)
    >>> parallel = kerasllm.distribution.torch_data_parallel(model)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(*parallel.shard((x, y), global_batch_size=32),
    ...           batch_size=parallel.local_batch_size(32), shuffle=False)
    """
    return TorchDataParallel(model, source_rank=source_rank)


class TorchDataParallel:
    """Gradient averaging for one model across `torch.distributed` processes; see `torch_data_parallel`.

    Args:
        model: a built `keras.Model`.
        source_rank: int. The process whose initial weights every process takes. Defaults to 0.

    Attributes:
        rank: int. This process's index.
        world_size: int. Number of processes.
    """

    def __init__(self, model, source_rank=0):
        _require_torch("torch_data_parallel")
        group = backend_distribution.torch_process_group()
        if group is None:
            raise ValueError(
                "torch_data_parallel needs an initialized torch.distributed process group. Call "
                "kerasllm.distribution.init_process_group() first in every process (under torchrun it needs no "
                "arguments; otherwise pass rank=, world_size= and port=)."
            )
        self.rank, self.world_size = group
        if not isinstance(model, keras.Model) or not model.built or not model.weights:
            raise ValueError(
                f"torch_data_parallel needs a built keras.Model, got {type(model).__name__} without weights. Build "
                "it first (e.g. call it on one batch); kerasllm models are built on creation."
            )
        if model in _ACTIVE:
            raise ValueError(
                "This model already averages its gradients across processes. Call `.close()` on the earlier "
                "TorchDataParallel before creating another."
            )
        if isinstance(source_rank, bool) or not isinstance(source_rank, int) or not 0 <= source_rank < self.world_size:
            raise ValueError(f"source_rank must be an integer in [0, {self.world_size}), got {source_rank!r}.")
        self.model = model
        variables = list(model.weights)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            variables += list(optimizer.variables)
        backend_distribution.torch_broadcast(variables, source=source_rank)
        self._handles = backend_distribution.torch_average_gradients(model.trainable_weights, self.world_size)
        _ACTIVE[model] = self

    def local_batch_size(self, global_batch_size):
        """The batch size each process passes to `fit`: `global_batch_size // world_size`.

        Raises a `ValueError` when the processes cannot share the global batch evenly.
        """
        global_batch_size = _positive_int(global_batch_size, "global_batch_size")
        if global_batch_size % self.world_size:
            low = global_batch_size // self.world_size * self.world_size
            raise ValueError(
                f"The global batch size {global_batch_size} is not divisible by the number of processes "
                f"({self.world_size}), so they cannot share each batch evenly. Use a multiple of "
                f"{self.world_size}, e.g. {low or self.world_size} or {low + self.world_size}."
            )
        return global_batch_size // self.world_size

    def shard(self, data, global_batch_size):
        """This process's rows of every global batch of `data`, in order.

        Global batch `b` is rows `[b * G, (b + 1) * G)`; this process gets rows
        `[b * G + rank * L, b * G + (rank + 1) * L)` of each, with `L = G / world_size`. Fit the result with
        `batch_size=L` and `shuffle=False` to train on exactly the global batches.

        A `keras.utils.PyDataset` (e.g. `kerasllm.data.LanguageModelingDataset` built with
        `batch_size=G`) is wrapped instead: each of its batches is cut the same way when `fit` reads it,
        and its epoch ends are passed on, so every process sees the same shuffled order.

        Args:
            data: a numpy array, a tuple, list or dict of arrays with the same number of rows, or a
                `keras.utils.PyDataset` whose batches hold `G` rows.
            global_batch_size: int. `G`, the batch size summed over the processes.

        Returns:
            The same structure, each array cut to this process's rows (or a `keras.utils.PyDataset`).
        """
        local = self.local_batch_size(global_batch_size)
        if isinstance(data, keras.utils.PyDataset):
            return _ShardedDataset(data, global_batch_size, self.rank * local, local)
        arrays = keras.tree.flatten(data)
        rows = {len(array) for array in arrays}
        if len(rows) != 1:
            raise ValueError(f"Every array in data must have the same number of rows, got {sorted(rows)}.")
        (n,) = rows
        extra = n % global_batch_size
        if extra:
            raise ValueError(
                f"data has {n} rows, not a whole number of global batches of {global_batch_size}; the last batch "
                f"could not be shared evenly. Drop the last {extra} rows (`x[:{n - extra}]`) or choose a global "
                "batch size that divides the number of rows."
            )
        starts = np.arange(0, n, global_batch_size) + self.rank * local
        index = (starts[:, None] + np.arange(local)[None, :]).reshape(-1)
        return keras.tree.map_structure(lambda array: np.asarray(array)[index], data)

    def average(self, values):
        """The mean over the processes of a number, or of every number in a dict.

        Every process must call it, with the same keys. Use it for what `evaluate` returns, which is
        computed on this process's shard only: `parallel.average(model.evaluate(x, y, return_dict=True))`.

        Args:
            values: a number, or a dict whose numeric values are averaged (others are kept as they are).

        Returns:
            A float, or a new dict.
        """
        if not isinstance(values, dict):
            return backend_distribution.torch_mean_over_processes([float(values)])[0]
        keys = sorted(key for key, value in values.items() if _is_number(value))
        means = backend_distribution.torch_mean_over_processes([float(values[key]) for key in keys]) if keys else []
        return {**values, **dict(zip(keys, means))}

    def average_logs(self):
        """A callback that makes every process log the mean over the processes, not its own shard's value.

        Each process's loss and metrics are computed on its own shard of every global batch, so without
        it the progress bar shows one process's numbers, `History` differs between processes and, worse,
        callbacks that decide on logs (`EarlyStopping`, `ReduceLROnPlateau`, `ModelCheckpoint` with
        `save_best_only`) can decide differently in different processes: one stops while the others
        wait for it in the next gradient all-reduce. Place it first in `callbacks`: it replaces each
        number of the logs by its mean (one all-reduce per batch and per epoch) before the callbacks
        after it, Keras's progress bar and `History` read them. With equally many examples per process
        (as `shard` gives), the mean of per-process means is the global mean; with masked tokens it is
        the mean of the processes' per-token means. `evaluate`'s return value is not changed: pass it to
        `average`.

        Returns:
            A `keras.callbacks.Callback`.

        Example:

        >>> model.fit(x, y, batch_size=parallel.local_batch_size(32), shuffle=False,
        ...           callbacks=[parallel.average_logs(), keras.callbacks.EarlyStopping(patience=2)])
        """
        return _AverageLogs(self)

    def close(self):
        """Removes the gradient-averaging hooks; the model trains on its own process's data again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if _ACTIVE.get(self.model) is self:
            del _ACTIVE[self.model]


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class _AverageLogs(keras.callbacks.Callback):
    """Replaces every number of the logs by its mean over the processes; see `TorchDataParallel.average_logs`."""

    def __init__(self, parallel):
        super().__init__()
        self.parallel = parallel

    def _average(self, logs):
        if logs:
            logs.update(self.parallel.average(logs))

    def on_train_batch_end(self, batch, logs=None):
        self._average(logs)

    def on_test_batch_end(self, batch, logs=None):
        self._average(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._average(logs)

    def on_test_end(self, logs=None):
        self._average(logs)


class _ShardedDataset(keras.utils.PyDataset):
    """Rows `[start, start + size)` of every batch of a `PyDataset` of global batches."""

    def __init__(self, dataset, global_batch_size, start, size):
        super().__init__()
        self.dataset, self.global_batch_size, self.start, self.size = dataset, global_batch_size, start, size

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        batch = self.dataset[index]
        rows = {len(array) for array in keras.tree.flatten(batch)}
        if rows != {self.global_batch_size}:
            raise ValueError(
                f"Batch {index} of the dataset has {sorted(rows)} rows, but the global batch size is "
                f"{self.global_batch_size}. Build the dataset with batch_size={self.global_batch_size} (the global "
                "batch), or pass its batch size as global_batch_size."
            )
        return keras.tree.map_structure(lambda array: array[self.start : self.start + self.size], batch)

    def on_epoch_end(self):
        self.dataset.on_epoch_end()
