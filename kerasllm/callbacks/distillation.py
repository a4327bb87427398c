"""Knowledge distillation from a frozen teacher, added to `model.fit()` as a callback."""

import keras
from keras import ops

from kerasllm.callbacks.compute_loss_wrapper import ComputeLossWrapper
from kerasllm.distillation.callback_helpers import block_map
from kerasllm.distillation.callback_helpers import cached_teacher
from kerasllm.distillation.callback_helpers import check_fraction
from kerasllm.distillation.callback_helpers import check_vocabulary
from kerasllm.distillation.callback_helpers import lay_out_teacher
from kerasllm.distillation.callback_helpers import padding_mask
from kerasllm.distillation.callback_helpers import relation_heads
from kerasllm.distillation.callback_helpers import vocabulary_size
from kerasllm.distillation.extra_layers import ExtraLayers
from kerasllm.distillation.layer_outputs import LayerOutputRecorder
from kerasllm.distillation.on_policy import continuation_mask
from kerasllm.distillation.on_policy import sample_continuations
from kerasllm.distillation.on_policy import uniform_noise
from kerasllm.distillation.step_state import ScheduledValue
from kerasllm.distillation.step_state import StepState
from kerasllm.distillation.teacher_inputs import input_names
from kerasllm.distillation.teacher_inputs import teacher_inputs
from kerasllm.distillation.teacher_logits_cache import TeacherLogitsCache
from kerasllm.losses import distillation
from kerasllm.losses import feature_distillation
from kerasllm.losses.distillation_loss import DistillationLoss
from kerasllm.losses.sparse_cross_entropy import IGNORE_INDEX
from kerasllm.models.language_model import LanguageModel
from kerasllm.utils.backend_gather import take_along_last_axis


class Distillation(keras.callbacks.Callback):
    """Trains the model towards a frozen teacher as well as towards the labels.

    For the duration of `fit()` the student's `compute_loss` is wrapped: inside the compiled training
    step it runs `teacher(x, training=False)`, stops its gradient, and returns

        alpha * distillation_loss + (1 - alpha) * label_loss
              + feature_weight * feature_loss + attention_weight * attention_loss

    where `label_loss` is what the student's own `compute_loss` gives (the compiled loss, e.g.
    `kerasllm.losses.CausalLMLoss`, plus any `add_loss` terms). The distillation loss is a
    `kerasllm.losses.DistillationLoss` averaged over the positions whose label is not `ignore_index`
    and, for dict inputs, whose `padding_mask` is set, weighted by the sample weights. Validation inside
    `fit()` uses the same combined loss. The progress bar and `History` show `distillation_loss`,
    `label_loss` (and `feature_loss`, `attention_loss`, `on_policy_loss` when used) next to `loss`, and,
    when scheduled, the current `distillation_temperature` and `distillation_alpha`.

    Beyond the logits (kerasllm `CausalLM` / `MaskedLM` students and teachers):

    - `features`: hidden states of student blocks are projected to the teacher's width by learned
      `Dense` layers (trained with the student, dropped afterwards) and pulled towards the hidden
      states of mapped teacher blocks (`kerasllm.losses.feature_distillation.hidden_state_mse`).
    - `attention=True`: MiniLM-v2 relation transfer between the queries, keys and values of the last
      attention layers (`kerasllm.losses.feature_distillation.attention_relation_kl`); works across
      different widths and head counts.
    - `on_policy_fraction`: for a causal student, that share of each training batch keeps its first
      half and is continued by the student's own sampling inside the step; the teacher scores the
      continuation and the distillation loss on those rows is taken over the sampled tokens (GKD).

    The teacher is set non-trainable during `fit()` (restored afterwards), runs in inference mode and
    never receives gradients; it may use another dtype policy (e.g. `"mixed_bfloat16"`). Its
    vocabulary must equal the student's. Under a `keras.distribution` (JAX) the teacher is moved onto
    the mesh when training begins, with the layouts the distribution gives its variable paths. When
    training ends the student is plain again: the wrapper, the projections (and their optimizer
    slots), the loss trackers and the compiled step functions are removed, so `student.save()` stores
    neither teacher nor projections.

    Exact resume with `kerasllm.callbacks.Checkpoint`: pass this callback in the checkpoint's
    `callbacks=[...]` (its schedules' position is saved) and list it before the checkpoint in
    `fit(callbacks=...)` (while training, the projections are part of the student's saved weights).

    Args:
        teacher: built `keras.Model` mapping the student's inputs to logits `(B, T, V)`, e.g. a
            `kerasllm.models.CausalLM` or KerasHub's `GPT2CausalLM` (dict-input models get
            `{"token_ids": x, "padding_mask": ones}` when `x` is a tensor of ids); or a
            `kerasllm.distillation.TeacherLogitsCache` for offline distillation, with no teacher in
            memory: train on `cache.attach(dataset)`, whose batches carry the teacher's cached top-k
            log-probabilities (validation data that is not attached gets the label loss only).
        loss: str or `kerasllm.losses.DistillationLoss`. `"forward_kl"`, `"reverse_kl"`, `"jsd"` or
            `"mse"`, or a loss object whose `kind` and `beta` (and `temperature`, unless given here) are
            used. Defaults to `"forward_kl"`.
        temperature: float > 0 or callable `step -> float`. Softening temperature, evaluated before each
            batch (`step` counts the training steps completed since `fit()` began). Defaults to the
            loss object's temperature, or `2.0` for a loss name.
        alpha: float in `[0, 1]` or callable `step -> float`. Weight of the distillation loss; `1`
            ignores the labels. Defaults to `0.5`.
        beta: float in `[0, 1]`. Teacher weight of the `"jsd"` mixture. Defaults to the loss object's
            beta, or `0.5`.
        top_k: int. Distil only over the teacher's `top_k` most likely tokens at each position plus
            one entry for the mass on all other tokens (see `kerasllm.losses.distillation.select_top_k`).
            Defaults to the loss object's `top_k`, or `None` (the whole vocabulary).
        features: `None`, `"hidden_states"` or dict `{student_block: teacher_block}`. Hidden-state
            distillation. `"hidden_states"` maps the student's block `i` (of `n`) to the teacher's block
            `(i + 1) * N // n - 1` (of `N`), so every `N // n`-th teacher block is matched and the last
            blocks meet; a dict gives block indices (negative ones count from the end). Defaults to
            `None` (off).
        feature_weight: float >= 0. Weight of the feature loss. Defaults to `1.0`.
        attention: bool. MiniLM-v2 attention-relation transfer between the last blocks. Defaults to
            `False`.
        attention_weight: float >= 0. Weight of the attention loss. Defaults to `1.0`.
        relation_heads: int. Relation heads of the attention transfer; must divide both models' query
            and key/value widths. Defaults to the smaller of the two models' head counts.
        on_policy_fraction: float in `[0, 1]`. Share of each training batch continued by the student's
            own sampling (causal students only). Defaults to `0.0`.
        on_policy_prompt_length: int. Tokens kept as the prompt of on-policy rows. Defaults to half the
            sequence length.
        on_policy_temperature: float > 0. Sampling temperature of on-policy rows. Defaults to `1.0`.
        seed: int. Seed of the on-policy sampling. Defaults to `None` (Keras's global seed).
        ignore_index: int. Label value of positions that do not count. Defaults to `-100`.
        teacher_input_fn: callable `x -> teacher inputs`, for teachers that need other inputs than the
            student. Defaults to `None` (automatic, as above).

    Example:

    >>> student.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> student.fit(train, epochs=3, callbacks=[
    ...     kerasllm.callbacks.Distillation(teacher, loss="reverse_kl", temperature=2.0, alpha=0.5,
    ...                                     features="hidden_states", attention=True)])
    >>> student.save("student.keras")  # a plain student

    References:
        - [Hinton et al., 2015, Distilling the Knowledge in a Neural Network](https://arxiv.org/abs/1503.02531)
        - [Sanh et al., 2019, DistilBERT](https://arxiv.org/abs/1910.01108)
        - [Wang et al., 2021, MiniLMv2](https://arxiv.org/abs/2012.15828)
        - [Agarwal et al., 2024, On-Policy Distillation of Language Models (GKD)](https://arxiv.org/abs/2306.13649)
    """

    def __init__(
        self,
        teacher,
        loss="forward_kl",
        temperature=None,
        alpha=0.5,
        beta=None,
        top_k=None,
        features=None,
        feature_weight=1.0,
        attention=False,
        attention_weight=1.0,
        relation_heads=None,
        on_policy_fraction=0.0,
        on_policy_prompt_length=None,
        on_policy_temperature=1.0,
        seed=None,
        ignore_index=IGNORE_INDEX,
        teacher_input_fn=None,
    ):
        super().__init__()
        if not isinstance(teacher, (keras.Model, TeacherLogitsCache)):
            raise ValueError(
                f"`teacher` must be a keras.Model or a kerasllm.distillation.TeacherLogitsCache, but got "
                f"{type(teacher).__name__}."
            )
        self._offline = isinstance(teacher, TeacherLogitsCache)
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
            check_fraction(alpha, "alpha")
        if teacher_input_fn is not None and not callable(teacher_input_fn):
            raise ValueError(f"`teacher_input_fn` must be callable, but got {teacher_input_fn!r}.")
        if features is not None and features != "hidden_states" and not isinstance(features, dict):
            raise ValueError(
                f"`features` must be None, 'hidden_states' or a dict {{student_block: teacher_block}}, but got "
                f"{features!r}."
            )
        for name, value in (("feature_weight", feature_weight), ("attention_weight", attention_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, but got {value!r}.")
        check_fraction(on_policy_fraction, "on_policy_fraction")
        distillation.check_temperature(on_policy_temperature)
        if self._offline:
            if features is not None or attention or on_policy_fraction > 0:
                raise ValueError(
                    "`features`, `attention` and `on_policy_fraction` need the teacher model itself; a "
                    "TeacherLogitsCache holds only its top-k log-probabilities. Pass the teacher model."
                )
            if top_k is not None and top_k > teacher.top_k:
                raise ValueError(
                    f"`top_k` ({top_k}) exceeds the {teacher.top_k} tokens per position in the cache at "
                    f"{teacher.path}. Use top_k <= {teacher.top_k}, or cache the teacher again with a larger top_k."
                )
        self.teacher = teacher
        self.loss = loss
        self.kind = kind
        self.temperature = temperature
        self.alpha = alpha
        self.beta = float(beta)
        self.top_k = top_k
        self.features = features
        self.feature_weight = float(feature_weight)
        self.attention = bool(attention)
        self.attention_weight = float(attention_weight)
        self.relation_heads = relation_heads
        self.on_policy_fraction = float(on_policy_fraction)
        self.on_policy_prompt_length = on_policy_prompt_length
        self.on_policy_temperature = float(on_policy_temperature)
        self.seed = seed
        self.ignore_index = int(ignore_index)
        self.teacher_input_fn = teacher_input_fn
        self._active = False
        self._step = 0
        self._resume_step = 0

    # --- fit() hooks ------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        for stale in ComputeLossWrapper.installed_by(model, Distillation):
            # A `fit()` that raised never called `on_train_end`: unwrap before wrapping again.
            stale.owner._restore()
        self._check_models(model)
        # Scheduled values live in metric variables: they are part of the state the compiled step
        # receives on every backend, so new values need no retrace.
        self._scheduled = {}
        for name, schedule in (("temperature", self.temperature), ("alpha", self.alpha)):
            if callable(schedule):
                value = self._evaluate(name, schedule, self._step)
                self._scheduled[name] = ScheduledValue(value, name=f"distillation_{name}")
        if not self._offline:
            self._teacher_input_names = input_names(self.teacher)
            self._teacher_was_trainable = self.teacher.trainable
            self.teacher.trainable = False
            lay_out_teacher(self.teacher)
        self._step, self._resume_step = self._resume_step, 0

        tracked = ["distillation_loss", "label_loss"]
        tracked += ["feature_loss"] if self.features is not None else []
        tracked += ["attention_loss"] if self.attention else []
        tracked += ["on_policy_loss"] if self.on_policy_fraction > 0 else []
        self._trackers = {name: keras.metrics.Mean(name=name) for name in tracked}
        self._seed_generator = keras.random.SeedGenerator(self.seed) if self.on_policy_fraction > 0 else None
        self._added_metrics = list(self._trackers.values()) + list(self._scheduled.values())
        if keras.backend.backend() == "jax":
            self._added_metrics.append(StepState(self._step_variables))
        elif self._seed_generator is not None:
            self._added_metrics.append(StepState(lambda: [self._seed_generator.state]))

        self._set_up_features(model)
        self._loss_wrapper = ComputeLossWrapper(model, self._compute_loss, owner=self, metrics=self._added_metrics)
        self._loss_wrapper.install()
        self._active = True

    def on_epoch_begin(self, epoch, logs=None):
        # Keras-JAX writes the last step's state back when an epoch ends, which undoes a value set
        # for a batch that then found no data (the shortened epoch of a resumed run): set it again.
        for variable in self._scheduled.values():
            variable.last_value = None

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

    def on_train_batch_end(self, batch, logs=None):
        # Counted at the end: Keras may begin a batch that the data then does not deliver (the last,
        # shortened epoch of a resumed run on JAX), and that must not advance the schedules.
        self._step += 1

    def on_train_end(self, logs=None):
        self._restore()

    def get_state(self):
        """The schedules' position, for `kerasllm.callbacks.Checkpoint(..., callbacks=[distillation])`."""
        return {"step": self._step}

    def set_state(self, state):
        # Works before or after this callback's `on_train_begin` (whichever order the callbacks run in).
        self._step = self._resume_step = int(state["step"])

    # --- the wrapped loss -------------------------------------------------------------------------

    def _compute_loss(self, label_loss_fn, x, y, y_pred, sample_weight, training):
        label_loss = label_loss_fn(x, y, y_pred, sample_weight, training=training)
        if not hasattr(y_pred, "shape") or len(y_pred.shape) < 2:
            raise ValueError(
                "Distillation needs a model that outputs one logits tensor of shape (batch, ..., vocabulary)."
            )
        values = {"label_loss": ops.cast(label_loss, "float32")}
        student_states = self._pop_states(self._student_recorder)
        top_k = self.top_k
        if self._offline:
            cached = cached_teacher(x)
            if cached is None:
                if training:
                    raise ValueError(
                        "Distillation from a TeacherLogitsCache needs the training batches to carry the "
                        "teacher's log-probabilities: fit on `cache.attach(dataset)` instead of the dataset."
                    )
                self._trackers["label_loss"].update_state(ops.stop_gradient(values["label_loss"]))
                return label_loss  # validation data without the cache: the label loss alone
            teacher_logits, indices = cached
            if top_k is not None:  # cached columns are sorted, most likely first
                teacher_logits, indices = teacher_logits[..., :top_k], indices[..., :top_k]
            indices = ops.cast(indices, "int32")
            if indices.shape[-1] == y_pred.shape[-1]:
                # The whole distribution, permuted: log-probabilities renormalize exactly like logits.
                student_logits = take_along_last_axis(y_pred, indices)
            elif self.kind == "mse":
                student_logits = take_along_last_axis(ops.log_softmax(y_pred, axis=-1), indices)
            else:  # the cached tokens plus one entry for the rest, as online with top_k
                teacher_logits, student_logits = distillation.top_k_with_rest(
                    teacher_logits, ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1), indices
                )
            teacher_states, top_k = {}, None
        else:
            student_logits = y_pred
            teacher_logits = ops.stop_gradient(self.teacher(self._teacher_inputs(x), training=False))
            teacher_states = self._pop_states(self._teacher_recorder)
        temperature = self._value("temperature")
        alpha = self._value("alpha")
        distillation_loss = distillation.distillation_loss(
            teacher_logits,
            student_logits,
            kind=self.kind,
            temperature=temperature,
            beta=self.beta,
            mask=self._mask(x, y, y_pred),
            sample_weight=sample_weight,
            top_k=top_k,
        )
        if self.on_policy_fraction > 0 and training:
            on_policy_loss = self._on_policy_loss(x, temperature)
            values["on_policy_loss"] = on_policy_loss
            fraction = self.on_policy_fraction
            distillation_loss = (1.0 - fraction) * distillation_loss + fraction * on_policy_loss
        values["distillation_loss"] = distillation_loss
        total = alpha * distillation_loss + (1.0 - alpha) * values["label_loss"]
        padding = padding_mask(x)
        if self.features is not None:
            values["feature_loss"] = self._feature_loss(student_states, teacher_states, padding)
            total = total + self.feature_weight * values["feature_loss"]
        if self.attention:
            values["attention_loss"] = self._attention_loss(student_states, teacher_states, padding)
            total = total + self.attention_weight * values["attention_loss"]

        batch_size = ops.shape(y_pred)[0]
        for name, value in values.items():
            self._trackers[name].update_state(ops.stop_gradient(value), sample_weight=batch_size)
        return total

    def _feature_loss(self, student_states, teacher_states, padding):
        losses = []
        for i, (student_block, teacher_block) in enumerate(self._block_map):
            projected = self._projections[i](student_states[("block", student_block)])
            target = ops.stop_gradient(teacher_states[("block", teacher_block)])
            losses.append(feature_distillation.hidden_state_mse(target, projected, mask=padding))
        return ops.mean(ops.stack(losses))

    def _attention_loss(self, student_states, teacher_states, padding):
        loss = 0.0
        for part in ("query", "key", "value"):
            loss = loss + feature_distillation.attention_relation_kl(
                ops.stop_gradient(teacher_states[("attention", part)]),
                student_states[("attention", part)],
                num_relation_heads=self._relation_heads,
                mask=padding,
                causal=getattr(self.model, "causal", False),
            )
        return loss

    def _on_policy_loss(self, x, temperature):
        token_ids = x["token_ids"] if isinstance(x, dict) else x
        batch, length = token_ids.shape[0], token_ids.shape[1]
        rows = max(1, round(self.on_policy_fraction * batch))
        prompt_length = self.on_policy_prompt_length or length // 2
        if not 1 <= prompt_length < length:
            raise ValueError(
                f"`on_policy_prompt_length` ({prompt_length}) must be in [1, sequence length {length})."
            )
        noise = uniform_noise((rows, length - prompt_length, self._vocabulary_size), self._seed_generator)
        with self._recording_paused():
            samples = sample_continuations(
                self.model, token_ids[:rows], prompt_length, noise, temperature=self.on_policy_temperature
            )
            student_logits = self.model(samples, training=True)
            teacher_logits = ops.stop_gradient(self.teacher(self._teacher_inputs(samples), training=False))
        return distillation.distillation_loss(
            teacher_logits,
            student_logits,
            kind=self.kind,
            temperature=temperature,
            beta=self.beta,
            mask=continuation_mask(rows, length, prompt_length),
            top_k=self.top_k,
        )

    # --- set-up -----------------------------------------------------------------------------------

    def _check_models(self, model):
        if self._offline:
            check_vocabulary(self.teacher.vocabulary_size, vocabulary_size(model), "cache")
            return
        if not self.teacher.built:
            raise ValueError("The teacher is not built: call it once on a batch (or load a trained one) first.")
        student_vocabulary = vocabulary_size(model)
        check_vocabulary(vocabulary_size(self.teacher), student_vocabulary, "teacher")
        self._vocabulary_size = student_vocabulary
        needs_blocks = self.features is not None or self.attention
        for who, candidate in (("student", model), ("teacher", self.teacher)):
            if needs_blocks and not isinstance(candidate, LanguageModel):
                raise ValueError(
                    f"`features` and `attention` need kerasllm models (CausalLM or MaskedLM) on both sides, "
                    f"but the {who} is a {type(candidate).__name__}. Use logit distillation only for it."
                )
        if self.on_policy_fraction > 0 and not getattr(model, "causal", False):
            raise ValueError(
                "`on_policy_fraction` needs a causal student (kerasllm.models.CausalLM) that can continue text; "
                f"got a {type(model).__name__}. Set on_policy_fraction=0."
            )
        if self.on_policy_fraction > 0 and student_vocabulary is None:
            raise ValueError("On-policy distillation needs the student's vocabulary size; use a kerasllm model.")

    def _set_up_features(self, model):
        self._block_map = []
        self._projections = []
        self._extra_layers = None
        student_layers, teacher_layers = {}, {}
        if self.features is not None:
            self._block_map = block_map(self.features, model.backbone.num_layers, self.teacher.backbone.num_layers)
            student_width, teacher_width = model.backbone.hidden_dim, self.teacher.backbone.hidden_dim
            for i, (student_block, teacher_block) in enumerate(self._block_map):
                student_layers[("block", student_block)] = model.backbone.blocks[student_block]
                teacher_layers[("block", teacher_block)] = self.teacher.backbone.blocks[teacher_block]
                projection = keras.layers.Dense(
                    teacher_width, use_bias=False, dtype=model.dtype_policy, name=f"distillation_projection_{i}"
                )
                projection.build((None, None, student_width))
                self._projections.append(projection)
            self._extra_layers = ExtraLayers(model, self._projections)
            self._extra_layers.attach()
        if self.attention:
            self._relation_heads = relation_heads(self.relation_heads, model.backbone, self.teacher.backbone)
            for part in ("query", "key", "value"):
                student_layers[("attention", part)] = getattr(model.backbone.blocks[-1].attention, part)
                teacher_layers[("attention", part)] = getattr(self.teacher.backbone.blocks[-1].attention, part)
        self._student_recorder = LayerOutputRecorder(student_layers)
        self._teacher_recorder = LayerOutputRecorder(teacher_layers)
        self._student_recorder.start()
        self._teacher_recorder.start()

    def _step_variables(self):
        variables = [] if self._offline else list(self.teacher.variables)
        if self._seed_generator is not None:
            variables.append(self._seed_generator.state)
        return variables

    # --- helpers ----------------------------------------------------------------------------------

    def _pop_states(self, recorder):
        return {key: recorder.pop(key) for key in recorder.layers}

    def _recording_paused(self):
        return _Paused((self._student_recorder, self._teacher_recorder))

    def _value(self, name):
        if name in self._scheduled:
            return self._scheduled[name].variable.value
        return float(getattr(self, name))

    def _teacher_inputs(self, x):
        token_ids = x["token_ids"] if isinstance(x, dict) else x
        teacher_length = getattr(self.teacher, "max_sequence_length", None)
        length = getattr(token_ids, "shape", (None, None))[1]
        if isinstance(teacher_length, int) and length is not None and length > teacher_length:
            raise ValueError(
                f"The batches hold sequences of {length} tokens, but the teacher reads at most "
                f"{teacher_length} (its max_sequence_length). Train the student on sequences of "
                f"{teacher_length} tokens or fewer, or distil from a teacher with a longer context."
            )
        if self.teacher_input_fn is not None:
            return self.teacher_input_fn(x)
        return teacher_inputs(x, self.teacher, self._teacher_input_names)

    def _mask(self, x, y, y_pred):
        mask = None
        if y is not None and not isinstance(y, (dict, list, tuple)) and len(y.shape) == len(y_pred.shape) - 1:
            mask = ops.not_equal(ops.cast(y, "int32"), self.ignore_index)
        padding = padding_mask(x)
        if padding is not None:
            mask = padding if mask is None else ops.logical_and(mask, padding)
        return mask

    def _evaluate(self, name, schedule, step):
        value = float(schedule(step))
        if name == "temperature":
            distillation.check_temperature(value)
        else:
            check_fraction(value, "alpha")
        return value

    def _restore(self):
        if not self._active:
            return
        self._loss_wrapper.remove()
        self._student_recorder.stop()
        self._teacher_recorder.stop()
        if self._extra_layers is not None:
            self._extra_layers.detach()
        if not self._offline:
            self.teacher.trainable = self._teacher_was_trainable
        self._active = False


class _Paused:
    """Context in which recorders keep what they had: the on-policy loop's tensors must not replace it."""

    def __init__(self, recorders):
        self.recorders = recorders

    def __enter__(self):
        self.saved = [dict(recorder.outputs) for recorder in self.recorders]

    def __exit__(self, *exc):
        for recorder, saved in zip(self.recorders, self.saved):
            recorder.outputs = saved
