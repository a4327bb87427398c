"""Skips or stops on training steps whose loss is NaN or infinite, restoring the last good state."""

import math

import keras
import numpy as np

ACTIONS = ("skip", "stop")


@keras.saving.register_keras_serializable(package="kerasllm")
class NonFiniteGuard(keras.callbacks.Callback):
    """Undoes training steps whose loss is not finite; skips them or stops training.

    After every step with a finite loss the guard copies the model's variables, the optimizer's
    variables (iteration counter included) and the metrics' variables to host memory. After a step
    whose loss is NaN or infinite it copies them back, so the bad step leaves no trace: weights,
    optimizer moments, step counter and the running loss are those of the last good step.
    With `action="skip"` training goes on with the next batch, and stops after `patience`
    consecutive bad steps. With `action="stop"` training stops at the first bad step. Either way it
    stops gracefully (`model.stop_training`), deletes nothing (a `kerasllm.callbacks.Checkpoint`
    never saves a non-finite step), and reports the step numbers in `bad_steps` and `stopped_at`.

    Cost: one host copy of the model, optimizer and metric variables (about 3x the parameter bytes
    with Adam), refreshed after every step. At kerasllm's CPU sizes this is small; for large models
    use `action="stop"` with a `Checkpoint` instead, and resume from the last checkpoint.

    Steps are counted from 1 across epochs and `fit` calls, as `Checkpoint` counts them; the guard takes part in
    `Checkpoint(callbacks=[guard])` through `get_state()`/`set_state()`.

    Args:
        action: str. `"skip"` or `"stop"`. Defaults to `"skip"`.
        patience: int. With `"skip"`, stop after this many consecutive bad steps. Defaults to `3`.
        verbose: bool. Whether to print a line for each bad step. Defaults to `True`.

    Example:

    >>> guard = kerasllm.callbacks.NonFiniteGuard(action="skip", patience=3)
    >>> model.fit(train, epochs=2, callbacks=[guard])
    >>> guard.bad_steps  # e.g. [17]: step 17 was undone
    """

    def __init__(self, action="skip", patience=3, verbose=True):
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(f"`action` must be one of {ACTIONS}, but got {action!r}.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"`patience` must be a positive integer, but got {patience!r}.")
        self.action = action
        self.patience = patience
        self.verbose = verbose
        self.step = 0
        self.bad_steps = []
        self.stopped_at = None
        self._consecutive = 0
        self._good = None

    def on_train_begin(self, logs=None):
        self.stopped_at = None
        self._good = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._good is None:  # here, not in on_train_begin: a `Checkpoint` may restore there
            self._good = self._snapshot()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if loss_is_finite(logs):
            self._consecutive = 0
            self._good = self._snapshot()
            return
        self._consecutive += 1
        self.bad_steps.append(self.step)
        self._restore(self._good)
        stop = self.action == "stop" or self._consecutive >= self.patience
        if self.verbose:
            what = "stopping training" if stop else "skipped it"
            print(f"\nNonFiniteGuard: step {self.step} had a non-finite loss; restored the state of the last "
                  f"good step and {what}.")
        if stop:
            self.stopped_at = self.step
            self.model.stop_training = True

    def _variables(self):
        model = self.model
        variables = list(model.trainable_variables) + list(model.non_trainable_variables)
        if model.optimizer is not None:
            variables += list(model.optimizer.variables)
        return variables + list(model.metrics_variables)

    def _snapshot(self):
        return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in self._variables()]

    def _restore(self, values):
        for variable, value in zip(self._variables(), values):
            variable.assign(value)

    def get_state(self):
        return {"step": self.step, "bad_steps": list(self.bad_steps), "consecutive": self._consecutive}

    def set_state(self, state):
        self.step = int(state["step"])
        self.bad_steps = [int(s) for s in state["bad_steps"]]
        self._consecutive = int(state["consecutive"])

    def get_config(self):
        return {"action": self.action, "patience": self.patience, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def loss_is_finite(logs):
    """Whether the `loss` in a batch's logs is finite (true when there is none to read)."""
    value = (logs or {}).get("loss")
    if value is None:
        return True
    try:
        return math.isfinite(float(np.asarray(keras.ops.convert_to_numpy(value)).reshape(())))
    except (TypeError, ValueError):
        return True
