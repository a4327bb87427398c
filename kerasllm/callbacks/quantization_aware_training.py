import json
import warnings

import keras

from kerasllm.utils import dense_transforms
from kerasllm.quantization import fake_quant
from kerasllm.quantization import observers
from kerasllm.quantization.quantize import MODES
from kerasllm.quantization.quantize import QAT_KEY
from kerasllm.quantization.quantize import SPEC_ATTRIBUTE
from kerasllm.quantization.quantize import check_convertible
from kerasllm.quantization.quantize import convert
from kerasllm.quantization.quantize import select_layers

QAT_PRIORITY = 10
ACTIVATION_QUANTIZATION = ("dynamic", "static")


@keras.saving.register_keras_serializable(package="kerasllm")
class QuantizationAwareTraining(keras.callbacks.Callback):
    """Quantization-aware training: trains through Keras's own int8 / int4 numerics, then converts.

    On train begin, every float `Dense` in the attention and feed-forward layers of a kerasllm model
    (or those chosen by `layers`) computes with fake-quantized weights (and, for int8, inputs) from
    `kerasllm.quantization.fake_quant`: the forward pass is exactly what the Keras-quantized layer will
    compute (`int8`: per-output-channel kernel, per-token inputs; `int4`: weight-only, groups of
    `group_size` input rows with a zero point), the gradient is straight-through. From `start_step`
    on the transforms are active; before it the model trains in float and the step is re-traced once
    at the switch. At the end of training (by default) the model is converted with
    `kerasllm.quantization.convert`, restricted to exactly the fake-quantized layers, so
    `model.save()` writes real int8 / packed int4 variables.

    With `activation_quantization="static"` (int8 only) each layer's inputs are instead fake-quantized
    with one per-tensor range from an observer of that layer's input activations
    (`kerasllm.quantization.MovingAverageMinMaxObserver` or `MinMaxObserver`, attached to the layer as
    `input_observer` when the callback is given the model). Inside the compiled step each observer
    first updates its range with the batch (training steps only), then the inputs are quantized with
    it (symmetric abs-max by default, affine with `activation_symmetric=False`; straight-through
    gradient). From step `freeze_observers_step` on, the ranges stop updating. `activation_ranges()`
    returns them and `save_activation_ranges(path)` writes them (with scale and zero point) as JSON
    for export targets that need static scales. Keras's int8 `Dense` quantizes its inputs per token
    at run time and cannot take a static scale: the converted model computes with dynamic input
    quantization (a warning says so), so in static mode the ranges are metadata next to the model,
    and the QAT forward is not exactly the converted model's forward.

    The state `get_state()` / `set_state()` (step, whether converted and, in static mode, the
    observed ranges and whether they are frozen) lets `kerasllm.callbacks.Checkpoint(callbacks=[qat])`
    resume it; the observer variables are also model weights, which `Checkpoint` saves.

    Args:
        mode: str. `"int8"` or `"int4"`. Defaults to `"int8"`.
        start_step: int. Training step (counted over all `fit()` calls of this callback) from which
            fake quantization is active. Defaults to `0`.
        quantize_head: bool. Also fake-quantize (and convert) an untied `lm_head`. Defaults to `False`.
        convert_on_train_end: bool. Convert to Keras-quantized layers when training ends. Defaults
            to `True`.
        layers: `None` (attention and feed-forward `Dense` layers), a list of substrings matched
            against layer paths, or a predicate `layer -> bool` over the model's `Dense` layers.
            Defaults to `None`.
        group_size: int or None. int4 only: input rows sharing a scale and zero point (Keras's
            `Int4QuantizationConfig(block_size=...)`); `None` for one symmetric scale per output
            channel. Must divide every chosen layer's input width. Defaults to `128`.
        activation_quantization: str. `"dynamic"` (per-token abs-max inputs, as Keras's int8 `Dense`
            computes) or `"static"` (one observed range per layer; `mode="int8"` only). Defaults
            to `"dynamic"`.
        observer: str. Static mode: `"moving_average_minmax"` (EMA of each batch's min / max) or
            `"minmax"` (running min / max). Defaults to `"moving_average_minmax"`.
        observer_momentum: float in `[0, 1)`. Momentum of the moving-average observer. Defaults to
            `0.99` (PyTorch's `averaging_constant=0.01`).
        freeze_observers_step: int or None. Static mode: training step (counted as `start_step`) from
            which the ranges stop updating; must be after `start_step`. `None` never freezes.
            Defaults to `None`.
        activation_symmetric: bool. Static mode: symmetric abs-max int8 grid (zero point 0) or an
            affine one. Defaults to `True`.

    Example:

    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=tokenizer.vocabulary_size)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(train, epochs=1, callbacks=[
    ...     kerasllm.callbacks.QuantizationAwareTraining(mode="int8", start_step=100)])
    >>> model.save("model-int8.keras")  # int8 kernels
    >>> # Static activation ranges, frozen after 500 steps, exported for another runtime:
    >>> qat = kerasllm.callbacks.QuantizationAwareTraining(
    ...     "int8", activation_quantization="static", freeze_observers_step=500)
    >>> model.fit(train, epochs=1, callbacks=[qat])
    >>> qat.save_activation_ranges("model-int8.activation_ranges.json")

    References:
        - [Jacob et al., 2018](https://arxiv.org/abs/1712.05877)
        - [Bengio et al., 2013 (straight-through estimator)](https://arxiv.org/abs/1308.3432)
    """

    def __init__(
        self,
        mode="int8",
        start_step=0,
        quantize_head=False,
        convert_on_train_end=True,
        layers=None,
        group_size=128,
        activation_quantization="dynamic",
        observer="moving_average_minmax",
        observer_momentum=0.99,
        freeze_observers_step=None,
        activation_symmetric=True,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Unknown QAT mode {mode!r}; use one of {MODES}.")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"`start_step` must be a non-negative integer, got {start_step!r}.")
        fake_quant.check_group_size(group_size)
        _check_static_arguments(
            mode, start_step, activation_quantization, observer, observer_momentum, freeze_observers_step
        )
        self.mode = mode
        self.start_step = start_step
        self.quantize_head = quantize_head
        self.convert_on_train_end = convert_on_train_end
        self.layers = layers
        self.group_size = group_size
        self.activation_quantization = activation_quantization
        self.observer = observer
        self.observer_momentum = float(observer_momentum)
        self.freeze_observers_step = freeze_observers_step
        self.activation_symmetric = bool(activation_symmetric)
        self.step = 0
        self.converted = False
        self.observers_frozen = False
        self._quantized_layers = []
        self._observed_model = None
        # Static mode: `[(layer path, min, max)]` in layer order: restored by `set_state` before the
        # observers exist (pending), or kept after conversion removed the observers.
        self._pending_records = None
        self._records = []

    # --- fit() hooks ------------------------------------------------------------------------------

    @property
    def static(self):
        """Whether inputs are fake-quantized with observed static ranges."""
        return self.activation_quantization == "static"

    def set_model(self, model):
        super().set_model(model)
        # Observers must exist before any `on_train_begin`: `Checkpoint` restores their variables with
        # the weights. `fit` calls this before it gathers the training state.
        if self.static and not self.converted and getattr(model, "built", False):
            self._attach_observers(model)

    def on_train_begin(self, logs=None):
        if self.converted:
            raise ValueError(
                "This QuantizationAwareTraining callback already converted its model to quantized layers; "
                "a converted model cannot be trained further. Pass convert_on_train_end=False to keep "
                "training across several fit() calls, then call kerasllm.quantization.convert() (or this "
                "callback's convert(), which activation_quantization='static' needs: it removes the observers)."
            )
        model = self.model
        if self.static:
            self._attach_observers(model)  # no-op when `set_model` attached them
            if self.observers_frozen:
                self.freeze_observers()
        else:
            layers = select_layers(model, layers=self.layers, quantize_head=self.quantize_head)
            check_convertible(layers, self.mode, self.group_size)
            for layer in layers:
                dense_transforms.check_transformable(layer)
            self._quantized_layers = layers
        if self.step >= self.start_step:
            self._activate()

    def on_train_batch_begin(self, batch, logs=None):
        if self.step >= self.start_step and not self.active:
            self._activate()
        if self._freeze_due():
            self.freeze_observers()
        self.step += 1

    def on_train_end(self, logs=None):
        if self.convert_on_train_end and self.active:
            self.convert()

    # --- state ------------------------------------------------------------------------------------

    @property
    def active(self):
        """Whether fake quantization is registered on the chosen layers."""
        return bool(self._quantized_layers) and dense_transforms.has_transform(
            self._quantized_layers[0], QAT_KEY
        )

    def convert(self):
        """Converts the fake-quantized layers to Keras-quantized ones (`kerasllm.quantization.convert`).

        In static mode the observers are removed first (their ranges stay in `activation_ranges()`),
        and a warning says that the converted Keras layers quantize their inputs dynamically.
        """
        model = self.model
        if not self.static:
            convert(model, self.mode, group_size=self.group_size)
            self.converted = True
            return
        attached = self._attached_observers()
        self._records = self._range_records()
        for layer in attached:
            observers.detach_observer(layer)
        try:
            convert(model, self.mode, group_size=self.group_size)
        except Exception:
            for layer, observer in attached.items():  # nothing half-converted: put them back
                _reattach(layer, observer)
            raise
        self.converted = True
        warnings.warn(
            "QuantizationAwareTraining(activation_quantization='static'): the converted Keras int8 Dense "
            "layers quantize their inputs per token at run time (Keras cannot take a static input scale), "
            "so the converted model does not use the observed ranges. They are kept as metadata: "
            "callback.activation_ranges(), or callback.save_activation_ranges(path) for a JSON file next "
            "to the model.",
            stacklevel=2,
        )

    def freeze_observers(self):
        """Stops the observers' ranges from updating (static mode); from the next step on."""
        if not self.static:
            raise ValueError(
                "freeze_observers() needs activation_quantization='static'; this callback quantizes "
                "activations dynamically and has no observers."
            )
        if self._attached_observers():
            _ = self.model  # on JAX, reading `self.model` syncs the training state into the variables
            for observer in self._attached_observers().values():
                observer.freeze()
        self.observers_frozen = True

    def activation_ranges(self):
        """The observed input range of each fake-quantized layer (static mode).

        Returns:
            dict `{layer path: (min, max)}` (Python floats) over the layers whose observer has seen
            at least one training batch; after conversion, the ranges at conversion time.
        """
        return {path: (low, high) for path, low, high in self._range_records() if low <= high}

    def save_activation_ranges(self, path):
        """Writes the observed ranges, with the int8 scale and zero point of each, as a JSON file.

        The file holds `{"format": 1, "activation_quantization": "static", "observer": ...,
        "symmetric": ..., "convention": "x ~ (q - zero_point) * scale", "layers": {layer path:
        {"min", "max", "scale", "zero_point", "quant_min", "quant_max"}}}`, for export targets that need
        static input scales (Keras's int8 layers do not use them).

        Args:
            path: str. The JSON file to write.
        """
        if not self.static:
            raise ValueError(
                "save_activation_ranges() needs activation_quantization='static'; with dynamic "
                "activation quantization there are no observed ranges."
            )
        layers = {}
        for name, (low, high) in self.activation_ranges().items():
            parameters = fake_quant.int8_static_parameters(low, high, symmetric=self.activation_symmetric)
            layers[name] = dict({"min": low, "max": high}, **parameters)
        document = {
            "format": 1,
            "activation_quantization": "static",
            "observer": self.observer,
            "symmetric": self.activation_symmetric,
            "frozen": self.observers_frozen,
            "convention": "x ~ (q - zero_point) * scale",
            "layers": layers,
        }
        with open(path, "w") as f:
            json.dump(document, f, indent=2)

    def get_state(self):
        state = {"step": self.step, "converted": self.converted}
        if self.static:
            state["observers_frozen"] = self.observers_frozen
            # In layer order, matched by position on restore (auto-generated model names differ between
            # models of one process); `None` for a layer not observed yet.
            state["activation_ranges"] = [
                [path, low, high] if low <= high else [path, None, None]
                for path, low, high in self._range_records()
            ]
        return state

    def set_state(self, state):
        self.step = int(state["step"])
        self.converted = bool(state["converted"])
        if not self.static:
            return
        self.observers_frozen = bool(state.get("observers_frozen", False))
        if "activation_ranges" not in state:  # saved in dynamic mode: nothing observed to restore
            return
        records = [
            (path, float("inf"), float("-inf")) if low is None else (path, float(low), float(high))
            for path, low, high in state["activation_ranges"]
        ]
        if self.converted:
            self._records, self._pending_records = records, None
            return
        self._pending_records = records
        if self._attached_observers():
            self._apply_pending_state()

    def get_config(self):
        if callable(self.layers):
            raise ValueError("A QuantizationAwareTraining with a `layers` predicate cannot be serialized.")
        return {
            "mode": self.mode,
            "start_step": self.start_step,
            "quantize_head": self.quantize_head,
            "convert_on_train_end": self.convert_on_train_end,
            "layers": self.layers,
            "group_size": self.group_size,
            "activation_quantization": self.activation_quantization,
            "observer": self.observer,
            "observer_momentum": self.observer_momentum,
            "freeze_observers_step": self.freeze_observers_step,
            "activation_symmetric": self.activation_symmetric,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # --- internals --------------------------------------------------------------------------------

    def _activate(self):
        if self.mode == "int8":
            kernel_fn, input_fn = fake_quant.fake_quantize_int8_weight, fake_quant.fake_quantize_int8_input
        else:
            group_size = self.group_size

            def kernel_fn(kernel):
                return fake_quant.fake_quantize_int4_weight(kernel, group_size=group_size)

            input_fn = None  # Keras's int4 Dense keeps its inputs in float.
        for layer in self._quantized_layers:
            if self.static:
                input_fn = _static_input_fn(observers.get_observer(layer), self.activation_symmetric)
            dense_transforms.add_transform(
                layer, QAT_KEY, kernel_fn=kernel_fn, input_fn=input_fn, priority=QAT_PRIORITY
            )
            object.__setattr__(layer, SPEC_ATTRIBUTE, (self.mode, self.group_size))
        model = self.model
        # Each step function was traced with the float layers; trace them again once, now.
        model.test_function = None
        model.predict_function = None
        model.make_train_function(force=True)

    def _freeze_due(self):
        return (
            self.static and not self.observers_frozen and self.freeze_observers_step is not None
            and self.step >= self.freeze_observers_step
        )

    def _attached_observers(self):
        """`{layer: observer}` over the chosen layers that carry an observer now."""
        found = {}
        for layer in self._quantized_layers:
            observer = observers.get_observer(layer)
            if observer is not None:
                found[layer] = observer
        return found

    def _attach_observers(self, model):
        if self._observed_model is model and self._quantized_layers and len(self._attached_observers()) == len(
            self._quantized_layers
        ):
            return
        layers = select_layers(model, layers=self.layers, quantize_head=self.quantize_head)
        check_convertible(layers, self.mode, self.group_size)  # everything first: nothing half-attached
        for layer in layers:
            dense_transforms.check_transformable(layer)
        for layer in layers:
            observers.attach_observer(layer, self.observer, momentum=self.observer_momentum)
        self._quantized_layers = layers
        self._observed_model = model
        self._apply_pending_state()

    def _range_records(self):
        """`[(layer path, min, max)]` in layer order; `(inf, -inf)` for a layer not observed yet."""
        attached = self._attached_observers()
        if not attached:
            return list(self._pending_records or self._records)
        _ = self.model  # on JAX, reading `self.model` syncs the training state into the variables
        return [(layer.path, *observer.range()) for layer, observer in attached.items()]

    def _apply_pending_state(self):
        attached = self._attached_observers()
        records = self._pending_records
        if records is not None and len(records) != len(attached):
            raise ValueError(
                f"The restored QuantizationAwareTraining state holds {len(records)} observed ranges, but "
                f"{len(attached)} layers of this model are fake-quantized: resume with the same model and "
                "the same `layers=` / `quantize_head=` as the run that saved it."
            )
        for index, observer in enumerate(attached.values()):
            if records is not None:
                observer.set_range(*records[index][1:])
            if self.observers_frozen:
                observer.freeze()
        self._pending_records = None


def _static_input_fn(observer, symmetric):
    def input_fn(inputs):
        # Inside the layer's call: the observer inherits its `training` flag (it updates only in
        # training steps) and returns the range including this batch, as PyTorch's FakeQuantize does.
        low, high = observer(inputs)
        return fake_quant.fake_quantize_int8_static(inputs, low, high, symmetric=symmetric)

    return input_fn


def _reattach(layer, observer):
    layer._tracker.unlock()
    try:
        setattr(layer, observers.OBSERVER_ATTRIBUTE, observer)
    finally:
        layer._tracker.lock()


def _check_static_arguments(mode, start_step, activation_quantization, observer, momentum, freeze_step):
    if activation_quantization not in ACTIVATION_QUANTIZATION:
        raise ValueError(
            f"Unknown activation_quantization {activation_quantization!r}; use 'dynamic' (per-token "
            "ranges at run time, what Keras's int8 Dense computes) or 'static' (observed per-layer ranges)."
        )
    observers.check_observer_name(observer)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(
            f"`observer_momentum` must be a number in [0, 1), but got {momentum!r}; e.g. 0.99."
        )
    if freeze_step is not None and (
        isinstance(freeze_step, bool) or not isinstance(freeze_step, int) or freeze_step < 0
    ):
        raise ValueError(
            f"`freeze_observers_step` must be a non-negative integer (the step from which the observed "
            f"ranges stop updating) or None to never freeze, but got {freeze_step!r}."
        )
    if activation_quantization != "static":
        if freeze_step is not None:
            raise ValueError(
                "`freeze_observers_step` applies to observed static ranges; pass "
                "activation_quantization='static' with it, or drop freeze_observers_step."
            )
        return
    if mode != "int8":
        raise ValueError(
            f"activation_quantization='static' needs mode='int8': Keras's {mode} Dense keeps its inputs "
            "in float, so there is no activation grid to observe. Use mode='int8', or "
            "activation_quantization='dynamic' with int4."
        )
    if freeze_step is not None and freeze_step <= start_step:
        raise ValueError(
            f"freeze_observers_step={freeze_step} is not after start_step={start_step}: the observers start "
            "at start_step and would be frozen before seeing a batch. Pass freeze_observers_step > start_step."
        )
