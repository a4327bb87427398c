"""Atomic training checkpoints (weights, optimizer, RNG, data position, callback state) and exact resume."""

import hashlib
import json
import os
import shutil
import warnings

import keras
import numpy as np

from kerasllm.callbacks.non_finite_guard import loss_is_finite
from kerasllm.utils.atomic import atomic_directory, remove_stray_temporaries
from kerasllm.utils.backend_rng import get_backend_rng_state, set_backend_rng_state
from kerasllm.utils.rng_state import get_rng_state, set_rng_state

WEIGHTS_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
RNG_FILE = "rng.npz"
STATE_FILE = "state.json"
COMPLETE_FILE = "COMPLETE"
_PREFIX = "step-"
_RAN_OUT = "Your input ran out of data"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file."""


@keras.saving.register_keras_serializable(package="kerasllm")
class Checkpoint(keras.callbacks.Callback):
    """Saves the whole training state atomically every few steps; `fit` resumes from the newest one.

    Every `every_n_steps` training steps (batches; with gradient accumulation a batch is a
    micro-step, and the accumulators are saved with the optimizer) it writes
    `directory/step-000123/` with:
    `model.weights.h5` (`model.save_weights`), `optimizer.npz` (every `model.optimizer.variables`:
    iteration counter, moments, gradient accumulators, loss scale), `rng.npz` (the states of the
    model's `keras.random.SeedGenerator`s, of Keras's global seed generator, of `np.random` and of
    Python's `random`, and torch's global generator, which Keras-torch's unseeded `Dropout` uses),
    `state.json` (step, epoch, batch position, data epoch, and `get_state()` of
    each callback in `callbacks`) and, last, `COMPLETE`: the size and SHA-256 of every file. The
    folder is filled as `directory/.tmp-step-000123-<pid>/`, fsynced and renamed into place, so a
    kill at any moment leaves either the new complete checkpoint or none; older checkpoints beyond
    `keep` are deleted only after the new one is in place. Steps whose loss is not finite are never
    saved.

    At `on_train_begin` stray temporary folders are deleted and the newest complete checkpoint is
    restored: weights, optimizer, RNG, callback states, the epoch to start at (Keras's own
    `initial_epoch` mechanism, as `keras.callbacks.BackupAndRestore` uses) and, through `dataset`,
    the batch within that epoch. A checkpoint that fails its checksums or does not load is skipped
    with a warning naming the file, and the previous one is tried.

    Exact resume needs: the same model, optimizer, data and callbacks as the first run; `dataset` a
    kerasllm dataset (`kerasllm.data.LanguageModelingDataset` or `MaskedLanguageModelingDataset`)
    passed to `fit` as `x`, without `steps_per_epoch`, with `shuffle=False` (the dataset shuffles its
    windows itself from `seed` and the epoch; Keras's `shuffle=True` would reorder batches with Python's
    `random`; tested with the default `workers=1`, no multiprocessing); and the same `epochs`. Keras
    sizes an epoch before `on_train_begin`, so the resumed epoch, whose dataset `len()` is only its
    remaining batches, ends by running out of data (Keras's warning for that is silenced for that
    epoch); the resumed run performs exactly the steps that were left. On torch the callback also
    rewinds torch's global generator before each step to its state after the previous step, so
    Keras's per-epoch `DataLoader` draws do not shift the dropout stream.

    Callbacks that hold training state join by defining `get_state()` (a JSON-serializable dict)
    and `set_state(state)`; pass them as `callbacks`.

    Args:
        directory: str. Folder of the checkpoints; created if missing.
        every_n_steps: int. Save every this many training steps (batches). Defaults to `100`.
        keep: int. How many of the newest complete checkpoints to keep. Defaults to `3`.
        save_on_train_end: bool. Also save when training ends (if the last step was not saved).
            Defaults to `True`.
        dataset: a kerasllm dataset, the one passed to `fit`. Needed to resume mid-epoch.
            Defaults to `None`.
        callbacks: list of callbacks with `get_state()`/`set_state()` to save and restore.
            Defaults to `None`.
        resume: bool. Whether to restore the newest checkpoint at the start of `fit`. Defaults to
            `True`.

    Example:

    >>> train = kerasllm.data.LanguageModelingDataset(ids, sequence_length=128, batch_size=32)
    >>> checkpoint = kerasllm.callbacks.Checkpoint("runs/tiny/checkpoints", every_n_steps=100,
    ...                                            dataset=train)
    >>> model.fit(train, epochs=4, shuffle=False, callbacks=[checkpoint])
    >>> # Killed? Run the same script again: it continues from the newest checkpoint.
    >>> kerasllm.callbacks.Checkpoint.latest("runs/tiny/checkpoints")["step"]
    """

    def __init__(
        self, directory, every_n_steps=100, keep=3, save_on_train_end=True, dataset=None, callbacks=None,
        resume=True,
    ):
        super().__init__()
        for name, value in (("every_n_steps", every_n_steps), ("keep", keep)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, but got {value!r}.")
        if dataset is not None and not hasattr(dataset, "set_position"):
            raise ValueError(
                f"`dataset` must be a kerasllm dataset with `set_position()` (e.g. "
                f"`kerasllm.data.LanguageModelingDataset`), but got {type(dataset).__name__}."
            )
        self.directory = str(directory)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.save_on_train_end = save_on_train_end
        self.dataset = dataset
        self.callbacks = list(callbacks or [])
        for callback in self.callbacks:
            if not (hasattr(callback, "get_state") and hasattr(callback, "set_state")):
                raise ValueError(f"{type(callback).__name__} in `callbacks` has no `get_state()`/`set_state()`.")
        self.resume = resume
        self.step = 0
        self.initial_epoch = 0
        self.restored_from = None
        self._epoch = 0
        self._epoch_start_batch = 0
        self._dataset_epoch = 0
        self._last_saved_step = None
        self._last_loss_finite = True
        self._warning_filters = None
        self._backend_rng = None
        self._batch = None

    # --- finding checkpoints -------------------------------------------------------------------

    @staticmethod
    def checkpoints(directory):
        """Complete checkpoint folders in `directory`, oldest first (those with a `COMPLETE` file)."""
        if not os.path.isdir(directory):
            return []
        names = [
            n for n in os.listdir(directory)
            if n.startswith(_PREFIX) and os.path.isfile(os.path.join(directory, n, COMPLETE_FILE))
        ]
        return [os.path.join(directory, n) for n in sorted(names, key=lambda n: int(n[len(_PREFIX):]))]

    @staticmethod
    def latest(directory):
        """`state.json` of the newest complete checkpoint in `directory` (with its `path`), or `None`.

        Its `"epoch"` is the epoch a resumed `fit` starts at (`Checkpoint` sets it itself).
        """
        for path in reversed(Checkpoint.checkpoints(directory)):
            try:
                return dict(read_state(path), path=path)
            except CheckpointError as error:
                warnings.warn(f"{error} Trying an earlier checkpoint.", stacklevel=2)
        return None

    # --- callback hooks --------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        remove_stray_temporaries(self.directory)
        self.step, self.initial_epoch, self.restored_from = 0, 0, None
        self._backend_rng = self._batch = None
        if not self.resume:
            return
        for path in reversed(self.checkpoints(self.directory)):
            try:
                state = self.restore(path)
            except CheckpointError as error:
                warnings.warn(f"{error} Falling back to the previous checkpoint.", stacklevel=2)
                continue
            self.restored_from = path
            self._resume_at(state)
            return

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start_batch = getattr(self.dataset, "start_batch", 0)
        self._dataset_epoch = getattr(self.dataset, "epoch", epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._backend_rng:
            # Keras-torch creates a `DataLoader` iterator at epoch boundaries (one or two, depending on
            # how the previous epoch ended), and each draws from torch's global generator. Rewinding it
            # to its state after the previous step keeps the dropout stream a function of the steps
            # alone, the same in an uninterrupted and a resumed run.
            set_backend_rng_state(self._backend_rng)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._backend_rng = get_backend_rng_state()
        self._last_loss_finite = loss_is_finite(logs)
        if self.step % self.every_n_steps == 0:
            self._save_now(batch)
        self._batch = batch

    def on_epoch_end(self, epoch, logs=None):
        if self._warning_filters is not None:  # the shortened resumed epoch is over
            warnings.filters[:] = self._warning_filters
            self._warning_filters = None

    def on_train_end(self, logs=None):
        if self.save_on_train_end and self.step != self._last_saved_step and self._batch is not None:
            self._save_now(self._batch)
        if self.model is not None and self.model._initial_epoch == self.initial_epoch:
            self.model._initial_epoch = None

    # --- saving ----------------------------------------------------------------------------------

    def _save_now(self, batch):
        if not self._last_loss_finite:
            warnings.warn(f"Checkpoint: step {self.step} has a non-finite loss; not saving it.", stacklevel=2)
            return
        epoch, position, dataset_epoch = self._epoch, self._epoch_start_batch + batch + 1, self._dataset_epoch
        steps = self.params.get("steps") if self.params else None
        batches = getattr(self.dataset, "batches_per_epoch", steps)
        if batches is not None and position >= batches:
            epoch, position, dataset_epoch = epoch + 1, 0, dataset_epoch + 1
        self.save(os.path.join(self.directory, f"{_PREFIX}{self.step:06d}"),
                  {"step": self.step, "epoch": epoch, "batch": position, "dataset_epoch": dataset_epoch})
        self._last_saved_step = self.step
        for old in self.checkpoints(self.directory)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def save(self, path, position):
        """Writes one checkpoint folder atomically at `path`; `position` holds step, epoch and batch."""
        model = self.model
        state = dict(position, format=1, backend=keras.backend.backend(), callbacks={
            _callback_key(i, c): c.get_state() for i, c in enumerate(self.callbacks)
        })
        with atomic_directory(path) as temp:
            model.save_weights(os.path.join(temp, WEIGHTS_FILE))
            optimizer_variables = model.optimizer.variables if model.optimizer is not None else []
            np.savez(os.path.join(temp, OPTIMIZER_FILE),
                     **{f"{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer_variables)})
            np.savez(os.path.join(temp, RNG_FILE), **get_rng_state(model))
            with open(os.path.join(temp, STATE_FILE), "w") as f:
                json.dump(state, f, indent=2)
            manifest = {name: _describe(os.path.join(temp, name)) for name in sorted(os.listdir(temp))}
            # Written last: a folder without it was never finished.
            with open(os.path.join(temp, COMPLETE_FILE), "w") as f:
                json.dump(manifest, f, indent=2)

    # --- restoring -------------------------------------------------------------------------------

    def restore(self, path):
        """Restores the model, optimizer, RNG and callbacks from a checkpoint folder; returns its state.

        Raises a `CheckpointError` naming the file if the folder is damaged.
        """
        state = read_state(path)
        model = self.model
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            # TensorFlow builds it lazily, after `on_train_begin`; `load_weights` needs it built.
            optimizer.build(model.trainable_variables)
        weights = os.path.join(path, WEIGHTS_FILE)
        try:
            model.load_weights(weights)
        except Exception as error:
            raise CheckpointError(f"Checkpoint file {weights!r} cannot be loaded: {error}") from error
        values = _load_npz(os.path.join(path, OPTIMIZER_FILE))
        if optimizer is not None:
            if len(values) != len(optimizer.variables):
                raise CheckpointError(
                    f"Checkpoint file {os.path.join(path, OPTIMIZER_FILE)!r} holds {len(values)} optimizer "
                    f"variables, the model's optimizer has {len(optimizer.variables)}: was it saved with "
                    "another optimizer or model?"
                )
            for variable, key in zip(optimizer.variables, sorted(values)):
                variable.assign(values[key])
        rng = _load_npz(os.path.join(path, RNG_FILE))
        set_rng_state(model, rng)
        self._backend_rng = {k[len("backend_"):]: v for k, v in rng.items() if k.startswith("backend_")}
        saved = state.get("callbacks", {})
        for i, callback in enumerate(self.callbacks):
            key = _callback_key(i, callback)
            if key in saved:
                callback.set_state(saved[key])
            else:
                warnings.warn(f"Checkpoint {path!r} has no state for callback {key}.", stacklevel=2)
        return state

    def _resume_at(self, state):
        self.step = self._last_saved_step = state["step"]
        self.initial_epoch = state["epoch"]
        # Read by `fit` right after `on_train_begin`, as for `keras.callbacks.BackupAndRestore`.
        self.model._initial_epoch = self.initial_epoch
        if self.dataset is not None:
            self.dataset.set_position(state["dataset_epoch"], state["batch"])
            if state["batch"]:
                # Keras sized the epoch before `on_train_begin`; the shortened epoch ends by running
                # out of data, which Keras reports as a warning. It is expected here: silence it for
                # that epoch only.
                self._warning_filters = list(warnings.filters)
                warnings.filterwarnings("ignore", message=_RAN_OUT)
        elif state["batch"]:
            warnings.warn(
                f"Checkpoint: resuming mid-epoch (epoch {state['epoch']}, batch {state['batch']}) without "
                "`dataset=`: the data restarts at the beginning of the epoch, so the run is not exact. "
                "Pass the kerasllm dataset as `Checkpoint(..., dataset=train)`.",
                stacklevel=2,
            )

    def get_config(self):
        return {"directory": self.directory, "every_n_steps": self.every_n_steps, "keep": self.keep,
                "save_on_train_end": self.save_on_train_end, "resume": self.resume}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def read_state(path):
    """Checks a checkpoint folder against its `COMPLETE` manifest and returns its `state.json`."""
    complete = os.path.join(path, COMPLETE_FILE)
    try:
        with open(complete) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Checkpoint file {complete!r} is missing or damaged: {error}.") from error
    for name, expected in manifest.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(f"Checkpoint file {file!r} is missing.")
        actual = _describe(file)
        if actual != expected:
            what = "truncated" if actual["size"] < expected["size"] else "corrupted"
            raise CheckpointError(
                f"Checkpoint file {file!r} is {what}: {actual['size']} bytes with SHA-256 "
                f"{actual['sha256'][:12]}..., expected {expected['size']} bytes, {expected['sha256'][:12]}...."
            )
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def _describe(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def _load_npz(path):
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except Exception as error:
        raise CheckpointError(f"Checkpoint file {path!r} cannot be loaded: {error}") from error


def _callback_key(index, callback):
    return f"{index}:{type(callback).__name__}"
