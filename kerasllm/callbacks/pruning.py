"""Magnitude pruning on a schedule, added to `model.fit()` as a callback."""

import keras
from keras import ops

from kerasllm.utils import dense_transforms
from kerasllm.quantization import pruning
from kerasllm.quantization.strip_pruning import reset_compiled_functions
from kerasllm.quantization.strip_pruning import strip_pruning


class Pruning(keras.callbacks.Callback):
    """Prunes the smallest-magnitude weights of the model's `Dense` layers while it trains.

    Every float `keras.layers.Dense` inside kerasllm attention and feed-forward layers (or those whose
    path matches `layers`) gets a mask: a non-trainable variable held by a small
    `kerasllm.quantization.pruning.PruningMask` sublayer. Inside the compiled training step the layer
    computes with `kernel * mask` (through `kerasllm.utils.dense_transforms`, before any
    quantization-aware training transform), so pruned weights get no gradient; after every step the
    kernel itself is multiplied by the mask, so pruned weights are exactly zero in the variables too.

    Steps count training batches seen by this callback. The masks are recomputed from the current
    weights at `begin_step`, then every `frequency` steps, and at `end_step`, after which they stay
    fixed. With `structure="unstructured"` each layer loses the `round(s * size)` smallest `|w|`, where
    `s` follows the polynomial schedule of Zhu & Gupta (2017) (`tfmot`'s `PolynomialDecay`, power 3)
    from `initial_sparsity` to `target_sparsity`, or is `target_sparsity` throughout with
    `schedule="constant"`; the sparsity is exactly `target_sparsity` in every layer from `end_step` on
    (when `target_sparsity * size` is an integer). With `structure="2:4"` every update keeps the two
    largest of each 4 consecutive input weights of each output (`target_sparsity` must be `0.5`).

    The masks are model state, so `kerasllm.callbacks.Checkpoint` saves them with the weights; pass
    this callback in its `callbacks=` too so the step counter resumes: a resumed run prunes exactly
    as the uninterrupted one. At the end of training (`strip_on_train_end=True`) the masks are removed
    by `kerasllm.quantization.strip_pruning`, leaving a plain model with exact zeros that saves and
    reloads with plain Keras. List `Checkpoint` before `Pruning` so that its final checkpoint is
    written before the masks are stripped.

    Args:
        target_sparsity: float in `[0, 1)`. Share of each layer's weights that are zero at the end.
        schedule: str. `"polynomial"` or `"constant"`. Defaults to `"polynomial"`.
        begin_step: int. First step at which masks are computed. Defaults to `0`.
        end_step: int. Step at which `target_sparsity` is reached. Defaults to the last step of `fit`
            (`params["steps"] * epochs`); required when the number of steps is unknown.
        frequency: int. Steps between mask updates. Defaults to `100`.
        structure: str. `"unstructured"` or `"2:4"`. Defaults to `"unstructured"`.
        initial_sparsity: float in `[0, 1)`. Sparsity at `begin_step` (polynomial schedule). Defaults
            to `0`.
        strip_on_train_end: bool. Remove the masks when training ends. Defaults to `True`.
        layers: `None`, or a regular expression (or list of them) matched against `Dense` layer
            paths, e.g. `"feedforward"`. Defaults to `None`: attention and feed-forward projections.

    Example:

    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=61)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(train, epochs=1, callbacks=[
    ...     kerasllm.callbacks.Pruning(target_sparsity=0.5, frequency=50)])
    >>> kerasllm.callbacks.Pruning.sparsity(model)  # {"causal_lm/backbone/...": 0.5, ...}

    References:
        - [Zhu & Gupta, 2017](https://arxiv.org/abs/1710.01878)
        - [Mishra et al., 2021](https://arxiv.org/abs/2104.08378)
    """

    def __init__(
        self,
        target_sparsity,
        schedule="polynomial",
        begin_step=0,
        end_step=None,
        frequency=100,
        structure="unstructured",
        initial_sparsity=0.0,
        strip_on_train_end=True,
        layers=None,
    ):
        super().__init__()
        pruning.validate_sparsity(target_sparsity, "target_sparsity")
        pruning.validate_sparsity(initial_sparsity, "initial_sparsity")
        if schedule not in pruning.SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; use one of {pruning.SCHEDULES}.")
        if structure not in pruning.STRUCTURES:
            raise ValueError(f"Unknown structure {structure!r}; use one of {pruning.STRUCTURES}.")
        if structure == "2:4" and target_sparsity != 0.5:
            raise ValueError(
                f"structure='2:4' prunes exactly half of the weights, but target_sparsity={target_sparsity}; "
                "pass target_sparsity=0.5 or use structure='unstructured'."
            )
        for name, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
            if value is None and name == "end_step":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "frequency" else 0):
                least = "a positive" if name == "frequency" else "a non-negative"
                raise ValueError(f"`{name}` must be {least} integer, but got {value!r}.")
        if end_step is not None and begin_step > end_step:
            raise ValueError(
                f"begin_step={begin_step} is after end_step={end_step}; pruning must begin before it ends "
                "(lower begin_step or raise end_step)."
            )
        self.target_sparsity = float(target_sparsity)
        self.schedule = schedule
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self.structure = structure
        self.initial_sparsity = float(initial_sparsity)
        self.strip_on_train_end = strip_on_train_end
        self.layers = layers
        self.step = 0
        self.last_update_step = None
        self._end_step = end_step
        self._restored = False
        self._in_batch = False
        self._pruned = []

    # --- the schedule ----------------------------------------------------------------------------

    def sparsity_at(self, step):
        """The unstructured sparsity the schedule asks for at `step` (`0` before `begin_step`)."""
        if step < self.begin_step:
            return 0.0
        if self.schedule == "constant":
            return self.target_sparsity
        return pruning.polynomial_sparsity(
            step, self.initial_sparsity, self.target_sparsity, self.begin_step, self._end_step
        )

    def is_update_step(self, step):
        """Whether the masks are recomputed once `step` training steps have run (`0`: before the first)."""
        if step < self.begin_step or step > self._end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self._end_step

    # --- callback hooks --------------------------------------------------------------------------

    def set_model(self, model):
        # Masks must exist before any `on_train_begin`: `Checkpoint` restores them with the weights.
        # `fit` calls this before it makes its train function, which then computes with the masks.
        super().set_model(model)
        self._pruned = self._attach(model)
        reset_compiled_functions(model)

    def on_train_begin(self, logs=None):
        if not self._restored:
            self.step, self.last_update_step = 0, None
            self._end_step = self.end_step
        if self._end_step is None:
            steps = (self.params or {}).get("steps")
            epochs = (self.params or {}).get("epochs")
            if not steps or not epochs:
                raise ValueError(
                    "Pruning: the number of training steps is unknown (the dataset has no length), so "
                    "`end_step` cannot default to the end of training; pass `end_step=`."
                )
            self._end_step = int(steps) * int(epochs)
        if self.begin_step > self._end_step:
            raise ValueError(
                f"Pruning: begin_step={self.begin_step} is after end_step={self._end_step} (the end of "
                "training); lower begin_step or train longer."
            )
        if not self._pruned:  # stripped by an earlier `fit` with the same callback
            model = self.model
            self._pruned = self._attach(model)
            reset_compiled_functions(model)
            model.make_train_function()
        # Step 0, or a resumed step whose update the checkpoint was written before.
        self._maybe_update()

    def on_train_batch_begin(self, batch, logs=None):
        # A `Checkpoint` listed before this callback saves `get_state()` at the end of the batch before
        # `step` counts it; `get_state` adds the running batch. (Steps are counted at the end of a
        # batch: Keras may begin a batch that then finds no data.)
        self._in_batch = True

    def on_epoch_end(self, epoch, logs=None):
        if self._in_batch:
            # Keras began a batch that found no data (the shortened epoch of a run resumed by
            # `Checkpoint`). On JAX that batch re-read the model state and the end of the epoch wrote
            # back the state of the last step, undoing what this callback assigned after it: redo the
            # last mask update (same kernel, same result) and the zeroing.
            self._in_batch = False
            if self.last_update_step == self.step:
                self.last_update_step = None
                self._maybe_update()
            for layer in self._layers_of(self.model):
                pruning.apply_mask(layer)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._in_batch = False
        # Updating here rather than before the next batch puts the final masks (at the last step) in
        # place before any `on_train_end`, e.g. before quantization-aware training converts the model.
        self._maybe_update()
        # The optimizer moves pruned weights through its moments; keep them exactly zero.
        for layer in self._layers_of(self.model):
            pruning.apply_mask(layer)

    def on_train_end(self, logs=None):
        self._restored = False
        quantized = any(layer.quantization_mode is not None for layer in self._layers_of(self.model))
        if self.strip_on_train_end or quantized:  # a mask on a converted (quantized) layer has no use
            strip_pruning(self.model)
            self._pruned = []

    def _maybe_update(self):
        if not self.is_update_step(self.step) or self.last_update_step == self.step:
            return
        model = self.model  # on JAX, reading `self.model` syncs the training state into the variables
        sparsity = self.sparsity_at(self.step)
        for layer in self._layers_of(model):
            holder = pruning.get_mask_holder(layer)
            kernel = ops.convert_to_numpy(ops.multiply(layer.kernel, ops.cast(holder.mask, layer.kernel.dtype)))
            holder.mask.assign(pruning.compute_mask(kernel, sparsity, self.structure))
            pruning.apply_mask(layer)
        self.last_update_step = self.step

    # --- state -------------------------------------------------------------------------------------

    def get_state(self):
        """JSON-able state (step counter, last update, resolved `end_step`); the masks are weights."""
        step = self.step + (1 if self._in_batch else 0)
        return {"step": step, "last_update_step": self.last_update_step, "end_step": self._end_step}

    def set_state(self, state):
        """Restores `get_state()`; `kerasllm.callbacks.Checkpoint` calls it when resuming."""
        self.step = int(state["step"])
        self.last_update_step = state["last_update_step"]
        self._end_step = state["end_step"]
        self._restored = True

    @staticmethod
    def sparsity(model):
        """Share of exact zeros in each masked (or, after stripping, pruned) layer's effective kernel.

        Returns:
            dict `{layer path: sparsity}` over the layers that have a mask; after stripping, over the
            attention and feed-forward `Dense` layers.
        """
        layers = [
            layer for layer in model._flatten_layers(include_self=True)
            if isinstance(layer, keras.layers.Dense) and pruning.get_mask_holder(layer) is not None
        ] or pruning.prunable_layers(model)
        result = {}
        for layer in layers:
            kernel = ops.convert_to_numpy(dense_transforms.transformed_kernel(layer))
            result[layer.path] = float((kernel == 0).mean())
        return result

    # --- helpers -----------------------------------------------------------------------------------

    def _attach(self, model):
        if not model.built:
            raise ValueError("Pruning: the model is not built; call it on a batch before `fit`.")
        layers = pruning.prunable_layers(model, self.layers)
        if not layers:
            where = f"matching {self.layers!r}" if self.layers is not None else "in attention or feed-forward layers"
            raise ValueError(
                f"Pruning found no Dense layers {where} in model {model.name!r}; pass `layers=` with a "
                "regular expression matching the paths of the Dense layers to prune."
            )
        for layer in layers:  # check everything first: nothing half-pruned
            dense_transforms.check_transformable(layer)
            if self.structure == "2:4" and layer.kernel.shape[0] % 4:
                raise ValueError(
                    f"structure='2:4' needs an input width that is a multiple of 4, but layer "
                    f"{layer.path!r} has {layer.kernel.shape[0]} inputs; exclude it with `layers=` or use "
                    "structure='unstructured'."
                )
        for layer in layers:
            pruning.attach_mask(layer)
        return layers

    def _layers_of(self, model):
        return [layer for layer in self._pruned if pruning.get_mask_holder(layer) is not None]
