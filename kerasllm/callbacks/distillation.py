"""Knowledge distillation from a frozen teacher, added to `model.fit()` as a callback."""

import inspect

import keras
from keras import ops

from kerasllm.losses import distillation
from kerasllm.losses.distillation_loss import DistillationLoss
from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX
from kerasllm.models.language_model import LanguageModel


class Distillation(keras.callbacks.Callback):
    """Trains the model towards a frozen teacher's logits as well as towards the labels.

    For the duration of `fit()` the student's `compute_loss` is wrapped: inside the compiled training
    step it runs `teacher(x, training=False)`, stops its gradient, and returns
    `alpha * distillation_loss + (1 - alpha) * label_loss`, where `label_loss` is what the student's
    own `compute_loss` gives (the compiled loss, e.g. `kerasllm.losses.CausalLMLoss`, plus any
    `add_loss` terms). The distillation loss is a `kerasllm.losses.DistillationLoss` averaged over the
    positions whose label is not `ignore_index` and, for dict inputs, whose `padding_mask` is set,
    weighted by the sample weights. Validation inside `fit()` uses the same combined loss. The
    progress bar and `History` show `distillation_loss` and `label_loss` next to `loss`, and, when
    scheduled, the current `distillation_temperature` and `distillation_alpha`.

    The teacher is set non-trainable during `fit()` (restored afterwards), runs in inference mode and
    never receives gradients; it may use another dtype policy (e.g. `"mixed_bfloat16"`). Its
    vocabulary must equal the student's. When training ends the student is plain again: the
    wrapper, the loss trackers and the compiled step functions are removed, so `student.save()`
    stores no teacher.

    Args:
        teacher: built `keras.Model` mapping the student's inputs to logits `(B, T, V)`, e.g. a
            `kerasllm.models.CausalLM` or KerasHub's `GPT2CausalLM` (dict-input models get
            `{"token_ids": x, "padding_mask": ones}` when `x` is a tensor of ids).
        loss: str or `kerasllm.losses.DistillationLoss`. `"forward_kl"`, `"reverse_kl"`, `"jsd"` or
            `"mse"`, or a loss object whose `kind` and `beta` (and `temperature`, unless given here) are
            used. Defaults to `"forward_kl"`.
        temperature: float > 0 or callable `step -> float`. Softening temperature, evaluated before each
            batch (`step` counts batches since `fit()` began). Defaults to the loss object's temperature,
            or `2.0` for a loss name.
        alpha: float in `[0, 1]` or callable `step -> float`. Weight of the distillation loss; `1`
            ignores the labels. Defaults to `0.5`.
        beta: float in `[0, 1]`. Teacher weight of the `"jsd"` mixture. Defaults to the loss object's
            beta, or `0.5`.
        top_k: int. Distil only over the teacher's `top_k` most likely tokens at each position,
            renormalized. Defaults to the loss object's `top_k`, or `None` (the whole vocabulary).
        ignore_index: int. Label value of positions that do not count. Defaults to `-100`.
        teacher_input_fn: callable `x -> teacher inputs`, for teachers that need other inputs than the
            student. Defaults to `None` (automatic, as above).

    Example:

    >>> student.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> student.fit(train, epochs=3, callbacks=[
    ...     kerasllm.callbacks.Distillation(teacher, loss="reverse_kl", temperature=2.0, alpha=0.5)])
    >>> student.save("student.keras")  # a plain student

    References:
        - [Hinton et al., 2015, Distilling the Knowledge in a Neural Network](https://arxiv.org/abs/1503.02531)
    """

    def __init__(
        self,
        teacher,
        loss="forward_kl",
        temperature=None,
        alpha=0.5,
        beta=None,
        top_k=None,
        ignore_index=IGNORE_INDEX,
        teacher_input_fn=None,
    ):
        super().__init__()
        if not isinstance(teacher, keras.Model):
            raise ValueError(f"`teacher` must be a keras.Model, but got {type(teacher).__name__}.")
        if isinstance(loss, DistillationLoss):
            kind = loss.kind
            temperature = loss.temperature if temperature is None else temperature
            beta = loss.beta if beta is None else beta
            top_k = loss.top_k if top_k is None else top_k
        elif isinstance(loss, str):
            kind = loss
        else:
            raise ValueError(f"`loss` must be a name or a kerasllm.losses.DistillationLoss, but got {loss!r}.")
        distillation.check_kind(kind)
        temperature = 2.0 if temperature is None else temperature
        beta = 0.5 if beta is None else beta
        distillation.check_beta(beta)
        distillation.check_top_k(top_k)
        if not callable(temperature):
            distillation.check_temperature(temperature)
        if not callable(alpha):
            _check_alpha(alpha)
        if teacher_input_fn is not None and not callable(teacher_input_fn):
            raise ValueError(f"`teacher_input_fn` must be callable, but got {teacher_input_fn!r}.")
        self.teacher = teacher
        self.loss = loss
        self.kind = kind
        self.temperature = temperature
        self.alpha = alpha
        self.beta = float(beta)
        self.top_k = top_k
        self.ignore_index = int(ignore_index)
        self.teacher_input_fn = teacher_input_fn
        self._active = False

    # --- fit() hooks ------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        stale = getattr(model.__dict__.get("compute_loss"), "__self__", None)
        if isinstance(stale, Distillation):
            # A `fit()` that raised never called `on_train_end`: unwrap before wrapping again.
            stale._restore()
        if not self.teacher.built:
            raise ValueError("The teacher is not built: call it once on a batch (or load a trained one) first.")
        teacher_vocabulary, student_vocabulary = _vocabulary_size(self.teacher), _vocabulary_size(model)
        if None not in (teacher_vocabulary, student_vocabulary) and teacher_vocabulary != student_vocabulary:
            raise ValueError(
                f"Teacher and student must share a vocabulary, but the teacher has {teacher_vocabulary} "
                f"tokens and the student {student_vocabulary}. Distil only between models trained with "
                "the same tokenizer."
            )
        # Scheduled values live in metric variables: they are part of the state the compiled step
        # receives on every backend (on JAX, `metrics_variables`), so new values need no retrace.
        self._scheduled = {}
        for name, schedule in (("temperature", self.temperature), ("alpha", self.alpha)):
            if callable(schedule):
                value = self._evaluate(name, schedule, 0)
                self._scheduled[name] = _ScheduledValue(value, name=f"distillation_{name}")
        self._teacher_takes_dict = _takes_dict(self.teacher)
        self._teacher_was_trainable = self.teacher.trainable
        self.teacher.trainable = False

        self._step = 0
        self._trackers = [
            keras.metrics.Mean(name="distillation_loss"),
            keras.metrics.Mean(name="label_loss"),
        ]
        self._added_metrics = self._trackers + list(self._scheduled.values())
        if keras.backend.backend() == "jax":
            # JAX's compiled step is a pure function of the state `fit()` passes in; weights it merely
            # closes over are baked into the program as constants (a GPT-2-sized teacher would be
            # hundreds of MB of HLO). Listing the teacher's variables as metric variables makes them
            # part of that state, unchanged by the step and written back when `fit()` syncs.
            self._added_metrics.append(_TeacherState(self.teacher))
        model._metrics.extend(self._added_metrics)

        self._had_own_compute_loss = "compute_loss" in model.__dict__
        self._original_compute_loss = model.compute_loss
        self._original_has_training = "training" in inspect.signature(self._original_compute_loss).parameters
        model.compute_loss = self._compute_loss
        # An earlier trace would bypass the wrapper; rebuild the step functions.
        model.test_function = None
        model.make_train_function(force=True)
        self._active = True

    def on_train_batch_begin(self, batch, logs=None):
        changed = {}
        for name, variable in self._scheduled.items():
            value = self._evaluate(name, getattr(self, name), self._step)
            if value != variable.last_value:
                changed[name] = value
        if changed:
            # On JAX, reading `self.model` writes the step's state back into the variables and makes
            # `fit()` read them again before the next step, so the assignment below is seen.
            self.model
            for name, value in changed.items():
                self._scheduled[name].set(value)
        self._step += 1

    def on_train_end(self, logs=None):
        self._restore()

    # --- the wrapped loss -------------------------------------------------------------------------

    def _compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self._original_has_training:
            label_loss = self._original_compute_loss(x, y, y_pred, sample_weight, training=training)
        else:
            label_loss = self._original_compute_loss(x, y, y_pred, sample_weight)
        if not hasattr(y_pred, "shape") or len(y_pred.shape) < 2:
            raise ValueError(
                "Distillation needs a model that outputs one logits tensor of shape (batch, ..., vocabulary)."
            )
        teacher_logits = ops.stop_gradient(self.teacher(self._teacher_inputs(x), training=False))
        temperature = self._value("temperature")
        alpha = self._value("alpha")
        distillation_loss = distillation.distillation_loss(
            teacher_logits,
            y_pred,
            kind=self.kind,
            temperature=temperature,
            beta=self.beta,
            mask=self._mask(x, y, y_pred),
            sample_weight=sample_weight,
            top_k=self.top_k,
        )
        label_loss = ops.cast(label_loss, "float32")
        total = alpha * distillation_loss + (1.0 - alpha) * label_loss

        batch_size = ops.shape(y_pred)[0]
        for tracker, value in zip(self._trackers, (distillation_loss, label_loss)):
            tracker.update_state(ops.stop_gradient(value), sample_weight=batch_size)
        return total

    def _value(self, name):
        if name in self._scheduled:
            return self._scheduled[name].variable.value
        return float(getattr(self, name))

    def _teacher_inputs(self, x):
        if self.teacher_input_fn is not None:
            return self.teacher_input_fn(x)
        if isinstance(x, dict):
            if self._teacher_takes_dict:
                return {k: v for k, v in x.items() if k in self._teacher_takes_dict}
            return x if isinstance(self.teacher, LanguageModel) else x["token_ids"]
        if self._teacher_takes_dict:
            inputs = {"token_ids": x}
            if "padding_mask" in self._teacher_takes_dict:
                inputs["padding_mask"] = ops.ones_like(x, dtype="int32")
            return inputs
        return x

    def _mask(self, x, y, y_pred):
        mask = None
        if y is not None and not isinstance(y, (dict, list, tuple)) and len(y.shape) == len(y_pred.shape) - 1:
            mask = ops.not_equal(ops.cast(y, "int32"), self.ignore_index)
        if isinstance(x, dict) and x.get("padding_mask") is not None:
            padding = ops.cast(x["padding_mask"], "bool")
            mask = padding if mask is None else ops.logical_and(mask, padding)
        return mask

    def _evaluate(self, name, schedule, step):
        value = float(schedule(step))
        if name == "temperature":
            distillation.check_temperature(value)
        else:
            _check_alpha(value)
        return value

    def _restore(self):
        if not self._active:
            return
        model = self.model
        if self._had_own_compute_loss:
            model.compute_loss = self._original_compute_loss
        else:
            del model.compute_loss
        for metric in self._added_metrics:
            model._metrics.remove(metric)
        model.train_function = None
        model.test_function = None
        self.teacher.trainable = self._teacher_was_trainable
        self._active = False


class _ScheduledValue(keras.metrics.Metric):
    """Holds a scheduled scalar in a metric variable; reports it as its result, never resets."""

    def __init__(self, value, name):
        super().__init__(name=name, dtype="float32")
        self.variable = self.add_variable(shape=(), initializer=keras.initializers.Constant(value), name="value")
        self.last_value = value

    def set(self, value):
        self.variable.assign(value)
        self.last_value = value

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        # A computed copy: on JAX the variable's own buffer is donated to the next step.
        return ops.multiply(self.variable, 1.0)


class _TeacherState(keras.metrics.Metric):
    """Exposes the teacher's variables as metric variables; reports nothing, never resets."""

    def __init__(self, teacher):
        super().__init__(name="distillation_teacher_state")
        self._teacher = teacher

    @property
    def variables(self):
        return list(self._teacher.variables)

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be a number in [0, 1] (or a callable step -> number), but got {alpha!r}.")


def _vocabulary_size(model):
    for candidate in (model, getattr(model, "backbone", None)):
        size = getattr(candidate, "vocabulary_size", None)
        if isinstance(size, int):
            return size
    try:
        return model.output.shape[-1]
    except (AttributeError, ValueError, TypeError):
        return None


def _takes_dict(model):
    """The input names of a functional model with dict inputs (KerasHub tasks), else `None`."""
    try:
        structure = model.input
    except (AttributeError, ValueError, TypeError):
        return None
    return frozenset(structure) if isinstance(structure, dict) else None
