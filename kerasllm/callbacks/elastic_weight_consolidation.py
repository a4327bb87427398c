"""Elastic weight consolidation: fine-tune on a new task while holding the weights the old task needs."""


import keras
import numpy as np
from keras import ops

from kerasllm.callbacks.compute_loss_wrapper import ComputeLossWrapper
from kerasllm.utils.backend_gradients import loss_gradients


class ElasticWeightConsolidation(keras.callbacks.Callback):
    """Penalizes moving the weights that mattered for a previous task (EWC).

    When `fit()` begins, the callback takes the model's current weights as anchors `w*` and estimates
    the diagonal of their Fisher information on `previous_data`: the mean over batches of the squared
    gradient of the model's compiled loss (the *per-batch empirical* Fisher, in inference mode, so
    without dropout). For the duration of `fit()` the model's `compute_loss` is wrapped to return

        loss + strength / 2 * sum_i F_i * (w_i - w*_i) ** 2

    summed over every trainable weight. The progress bar and `History` show `ewc_penalty` next to
    `loss`. Anchors and Fisher are held as metric variables, which the compiled step receives as
    inputs on every backend (on JAX they would otherwise be baked into the program as constants). When
    training ends the model is plain again (its own `compute_loss`, no extra metrics).

    Fit the previous task, then call `fit()` on the new task with this callback; each `fit()` takes
    new anchors, so pass the callback only to the fits that follow a task to keep.

    Args:
        previous_data: iterable of `(x, y)` or `(x, y, sample_weight)` batches of the previous task,
            e.g. a `kerasllm.data.LanguageModelingDataset`, a `keras.utils.PyDataset`, a list of
            batches or a `tf.data.Dataset`.
        strength: float >= 0. The penalty's weight `lambda`; `0` turns it off. Useful values depend
            on the loss scale and the amount of data (Fisher values are small: try 1e2 to 1e6).
        num_batches: int. Use at most this many batches of `previous_data` for the Fisher estimate.
            Defaults to `None` (all of them).
        fisher: str. How the Fisher information is estimated; only `"empirical"` (squared gradients
            of the compiled loss on the given labels, averaged over batches) is implemented.
            Defaults to `"empirical"`.

    Example:

    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(tragedies, epochs=2)
    >>> model.fit(comedies, epochs=2, callbacks=[
    ...     kerasllm.callbacks.ElasticWeightConsolidation(tragedies, strength=1e4, num_batches=20)])

    References:
        - [Kirkpatrick et al., 2017, Overcoming catastrophic forgetting in neural networks](https://arxiv.org/abs/1612.00796)
    """

    def __init__(self, previous_data, strength, num_batches=None, fisher="empirical"):
        super().__init__()
        if previous_data is None:
            raise ValueError(
                "`previous_data` is None. Pass the previous task's batches (e.g. its "
                "kerasllm.data.LanguageModelingDataset) so EWC can measure which weights matter for it."
            )
        if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating)) or strength < 0:
            raise ValueError(f"`strength` must be a number >= 0, but got {strength!r}. Use 0 to turn EWC off.")
        if num_batches is not None and (
            isinstance(num_batches, bool) or not isinstance(num_batches, (int, np.integer)) or num_batches < 1
        ):
            raise ValueError(f"`num_batches` must be a positive int or None, but got {num_batches!r}.")
        if fisher != "empirical":
            raise ValueError(f"`fisher` must be 'empirical' (the only estimate implemented), but got {fisher!r}.")
        self.previous_data = previous_data
        self.strength = float(strength)
        self.num_batches = None if num_batches is None else int(num_batches)
        self.fisher = fisher
        self.fisher_values = None  # list of numpy arrays, set by `on_train_begin`
        self._active = False

    # --- fit() hooks ------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        for stale in ComputeLossWrapper.installed_by(model, ElasticWeightConsolidation):
            stale.owner._restore()  # a `fit()` that raised never called `on_train_end`
        self.fisher_values = self.compute_fisher(model)
        self._state = _EWCState(model.trainable_variables, self.fisher_values)
        self._tracker = keras.metrics.Mean(name="ewc_penalty")
        self._added_metrics = [self._tracker, self._state]

        self._loss_wrapper = ComputeLossWrapper(model, self._compute_loss, owner=self, metrics=self._added_metrics)
        self._loss_wrapper.install()
        self._active = True

    def on_train_end(self, logs=None):
        self._restore()

    # --- the Fisher information and the penalty ---------------------------------------------------

    def compute_fisher(self, model):
        """The per-batch empirical diagonal Fisher of `model`'s trainable weights on `previous_data`.

        Args:
            model: compiled `keras.Model`.

        Returns:
            A list of float32 numpy arrays shaped like `model.trainable_variables`: the mean over
            batches of the squared gradient of the compiled loss.
        """
        if not getattr(model, "compiled", False):
            raise ValueError("ElasticWeightConsolidation needs a compiled model: call model.compile(loss=...) first.")
        sums = [np.zeros(tuple(v.shape), np.float64) for v in model.trainable_variables]
        count = 0
        for batch in _batches(self.previous_data, self.num_batches):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(_to_numpy(batch))
            grads = loss_gradients(model, x, y, sample_weight)
            for total, grad in zip(sums, grads):
                total += np.square(grad.astype(np.float64))
            count += 1
        if count == 0:
            raise ValueError(
                "`previous_data` yielded no batches. Pass the previous task's (non-empty) batches; check "
                "its length and `num_batches`."
            )
        return [(total / count).astype(np.float32) for total in sums]

    def _compute_loss(self, loss_fn, x, y, y_pred, sample_weight, training):
        loss = loss_fn(x, y, y_pred, sample_weight, training=training)
        weights = [v.value for v in self.model.trainable_variables]
        penalty = ewc_penalty(weights, self._state.anchors, self._state.fisher, self.strength)
        self._tracker.update_state(ops.stop_gradient(penalty))
        return ops.cast(loss, "float32") + penalty

    def _restore(self):
        if not self._active:
            return
        self._loss_wrapper.remove()
        self._active = False


def ewc_penalty(weights, anchors, fisher, strength):
    """`strength / 2 * sum(F * (w - anchor) ** 2)` over lists of tensors, as a float32 scalar.

    Args:
        weights: list of tensors. The current weights.
        anchors: list of tensors. The weights to stay near, shaped like `weights`.
        fisher: list of tensors. Each weight's importance (diagonal Fisher information), shaped like
            `weights`.
        strength: float. The penalty's weight.

    Returns:
        A float32 scalar tensor.
    """
    total = ops.zeros((), "float32")
    for w, anchor, f in zip(weights, anchors, fisher):
        delta = ops.cast(w, "float32") - ops.cast(anchor, "float32")
        total = total + ops.sum(ops.cast(f, "float32") * ops.square(delta))
    return 0.5 * strength * total


class _EWCState(keras.metrics.Metric):
    """Anchors and Fisher values as metric variables: inputs of the compiled step on every backend."""

    def __init__(self, variables, fisher_values, name="ewc_state"):
        super().__init__(name=name, dtype="float32")
        self.anchors, self.fisher = [], []
        for i, (variable, fisher) in enumerate(zip(variables, fisher_values)):
            anchor = self.add_variable(tuple(variable.shape), "zeros", name=f"anchor_{i}")
            # A host copy: on JAX a shared buffer would be donated twice by the compiled step.
            anchor.assign(np.array(ops.convert_to_numpy(variable.value), np.float32))
            importance = self.add_variable(tuple(variable.shape), "zeros", name=f"fisher_{i}")
            importance.assign(fisher)
            self.anchors.append(anchor)
            self.fisher.append(importance)

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass  # the anchors must survive the per-epoch metric reset

    def result(self):
        return {}


def _batches(data, limit):
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        count = len(data) if count is None else count
        indices = range(count if limit is None else min(count, limit))
        return (data[i] for i in indices)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise ValueError(
            f"`previous_data` must be an iterable of (x, y) batches (a PyDataset, a list of batches or a "
            f"tf.data.Dataset), but got {type(data).__name__}."
        )

    def generate():
        for i, batch in enumerate(data):
            if limit is not None and i >= limit:
                return
            yield batch

    return generate()


def _to_numpy(batch):
    return keras.tree.map_structure(lambda t: None if t is None else np.asarray(t), batch)
