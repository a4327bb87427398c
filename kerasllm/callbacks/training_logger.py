"""Writes per-step training curves to CSV and plots them at the end of training."""

import csv
import os

import keras
import numpy as np
from keras import ops

from kerasllm.optimizers.schedules import eager_safe_schedule
from kerasllm.utils.plotting import plot_history

_OWN_COLUMNS = ("step", "epoch", "learning_rate", "gradient_norm")


def _to_float(value):
    try:
        return float(np.asarray(ops.convert_to_numpy(value)).reshape(()))
    except (TypeError, ValueError):
        return None


@keras.saving.register_keras_serializable(package="kerasllm")
class TrainingLogger(keras.callbacks.Callback):
    """Logs loss, metrics, learning rate and gradient norm per step to CSV, and plots the loss.

    Writes `directory/history.csv` with one row every `every_n_steps` batches and columns `step`,
    `epoch`, `loss`, the other training metrics in the logs (e.g. `perplexity`), `learning_rate` and
    `gradient_norm`. The learning rate is `model.optimizer.learning_rate` read at the optimizer's
    current iteration (the rate its next update will use); the gradient norm is the one a
    `kerasllm.optimizers.AdamW` recorded for the last update, left empty for other optimizers.
    Validation metrics are appended at each epoch end to `directory/validation.csv` (`epoch`, `step`
    and the `val_*` columns). Both files are flushed after every row. When training ends,
    `directory/loss.png` shows train loss per step and validation loss per epoch.

    Logged values are the running means Keras reports for the epoch so far, as in the progress bar.

    Resuming: pass the logger to `kerasllm.callbacks.Checkpoint(..., callbacks=[logger])`. Its
    `get_state()` (the step counter) is saved with each checkpoint; a resumed `fit` keeps the rows of
    both files up to the restored step, drops those the interrupted run wrote after it (the resumed
    run trains those steps again), and appends from there, so every step appears once and `step`
    continues. The files are opened at the first batch, after every `on_train_begin`, so the order of
    the logger and the checkpoint in `fit(callbacks=...)` does not matter. Without a restored state
    the files are overwritten.

    Args:
        directory: str. Folder for the files; created if missing. Existing files are overwritten,
            unless a `Checkpoint` restores the logger's state (then they are continued).
        every_n_steps: int. Write a row every this many batches. Defaults to `1`.
        plot: bool. Whether to write `loss.png` at the end of training. Defaults to `True`.

    Example:

    >>> model.compile(optimizer=kerasllm.optimizers.create_optimizer(1e-3, total_steps=100),
    ...               loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
    >>> model.fit(x, y, validation_data=(vx, vy), epochs=2,
    ...           callbacks=[kerasllm.callbacks.TrainingLogger("runs/tiny", every_n_steps=10)])
    """

    def __init__(self, directory, every_n_steps=1, plot=True):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive integer, but got {every_n_steps!r}.")
        self.directory = str(directory)
        self.every_n_steps = every_n_steps
        self.plot = plot
        self.history_path = os.path.join(self.directory, "history.csv")
        self.validation_path = os.path.join(self.directory, "validation.csv")
        self.plot_path = os.path.join(self.directory, "loss.png")
        self._files = {}
        self._writers = {}
        self._step = 0
        self._epoch = 0
        self._restored_step = None
        self._files_ready = False
        self._running_batch = None

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        self._close()
        self._files_ready = False
        if self._restored_step is None:
            self._step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if not self._files_ready:
            self._prepare_files()
        self._running_batch = batch

    def _prepare_files(self):
        # Runs at the first batch, after every callback's `on_train_begin`: a `Checkpoint` listed
        # before or after this logger has restored its state by then.
        if self._restored_step is None:
            for path in (self.history_path, self.validation_path):
                if os.path.exists(path):
                    os.remove(path)
        else:
            for path in (self.history_path, self.validation_path):
                _truncate_after_step(path, self._restored_step)
            self._step, self._restored_step = self._restored_step, None
        self._files_ready = True

    def on_train_batch_end(self, batch, logs=None):
        # Counted at the end, as `Checkpoint` counts: Keras may begin a batch that the data then does
        # not deliver (the shortened epoch of a resumed run).
        self._step += 1
        self._running_batch = None
        if self._step % self.every_n_steps:
            return
        logs = logs or {}
        metrics = {k: v for k, v in logs.items() if k not in _OWN_COLUMNS and not k.startswith("val_")}
        keys = sorted(metrics, key=lambda k: (k != "loss", k))
        # Reading `self.model` syncs JAX state, so only logged steps pay for it.
        optimizer = self.model.optimizer
        row = {"step": self._step, "epoch": self._epoch}
        row.update({k: _to_float(metrics[k]) for k in keys})
        row["learning_rate"] = _learning_rate(optimizer)
        row["gradient_norm"] = _gradient_norm(optimizer)
        self._write("history", ["step", "epoch", *keys, "learning_rate", "gradient_norm"], row)

    def on_epoch_end(self, epoch, logs=None):
        self._running_batch = None
        validation = {k: v for k, v in (logs or {}).items() if k.startswith("val_")}
        if not validation:
            return
        keys = sorted(validation, key=lambda k: (k != "val_loss", k))
        row = {"epoch": epoch, "step": self._step}
        row.update({k: _to_float(validation[k]) for k in keys})
        self._write("validation", ["epoch", "step", *keys], row)

    def on_train_end(self, logs=None):
        if not self._files_ready:  # no batch ran
            self._prepare_files()
        self._close()
        if self.plot and os.path.exists(self.history_path):
            plot_history(
                self.history_path,
                self.plot_path,
                validation_path=self.validation_path if os.path.exists(self.validation_path) else None,
            )

    def _write(self, kind, columns, row):
        if kind not in self._writers:
            path = self.history_path if kind == "history" else self.validation_path
            existing = _header(path)
            # Columns are fixed by the first row (or by the file a resumed run continues); later extra
            # keys are dropped, missing ones left empty.
            self._files[kind] = open(path, "a" if existing else "w", newline="")
            fieldnames = existing or columns
            self._writers[kind] = csv.DictWriter(self._files[kind], fieldnames=fieldnames, extrasaction="ignore")
            if not existing:
                self._writers[kind].writeheader()
        self._writers[kind].writerow({k: "" if v is None else v for k, v in row.items()})
        self._files[kind].flush()

    def _close(self):
        for f in self._files.values():
            f.close()
        self._files, self._writers = {}, {}

    def get_state(self):
        """The step counter, for `kerasllm.callbacks.Checkpoint(..., callbacks=[logger])`."""
        # A `Checkpoint` listed before the logger saves inside the batch, before the logger counts it.
        return {"step": self._step + (self._running_batch is not None)}

    def set_state(self, state):
        """Restores `get_state()`; the next `fit` continues the files from that step."""
        self._step = self._restored_step = int(state["step"])

    def get_config(self):
        return {"directory": self.directory, "every_n_steps": self.every_n_steps, "plot": self.plot}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _header(path):
    """The column names of an existing non-empty CSV file, or `None`."""
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def _truncate_after_step(path, step):
    """Keeps the header and the rows of `path` whose `step` is at most `step`; rewrites it atomically."""
    header = _header(path)
    if header is None:
        return
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("step") and int(float(row["step"])) <= step]
    temporary = f"{path}.tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def _learning_rate(optimizer):
    """The rate of the optimizer's next update, or `None` without an optimizer."""
    if optimizer is None:
        return None
    # A `LossScaleOptimizer` (mixed float16) delegates to the optimizer that owns the schedule.
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        # Keras's `CosineDecay` with a warmup leaks memory on every eager call on JAX: read an equal,
        # leak-free schedule instead (see `kerasllm.optimizers.WarmupCosineDecay`).
        # Keras evaluates schedules at the raw iteration counter (`_iterations`), as here.
        return _to_float(eager_safe_schedule(schedule)(getattr(inner, "_iterations", inner.iterations)))
    return _to_float(optimizer.learning_rate)


def _gradient_norm(optimizer):
    # A `LossScaleOptimizer` (mixed float16) wraps the optimizer that owns the variable.
    for candidate in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        norm = getattr(candidate, "gradient_norm", None)
        if norm is not None:
            return _to_float(norm)
    return None
