import keras

from kerasllm.quantization import dense_transforms
from kerasllm.quantization import fake_quant
from kerasllm.quantization.quantize import MODES
from kerasllm.quantization.quantize import QAT_KEY
from kerasllm.quantization.quantize import SPEC_ATTRIBUTE
from kerasllm.quantization.quantize import check_convertible
from kerasllm.quantization.quantize import convert
from kerasllm.quantization.quantize import select_layers

QAT_PRIORITY = 10


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

    The state `get_state()` / `set_state()` (step, whether converted) lets
    `kerasllm.callbacks.Checkpoint(callbacks=[qat])` resume it.

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

    Example:

    >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=tokenizer.vocabulary_size)
    >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(train, epochs=1, callbacks=[
    ...     kerasllm.callbacks.QuantizationAwareTraining(mode="int8", start_step=100)])
    >>> model.save("model-int8.keras")  # int8 kernels

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
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Unknown QAT mode {mode!r}; use one of {MODES}.")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"`start_step` must be a non-negative integer, got {start_step!r}.")
        fake_quant.check_group_size(group_size)
        self.mode = mode
        self.start_step = start_step
        self.quantize_head = quantize_head
        self.convert_on_train_end = convert_on_train_end
        self.layers = layers
        self.group_size = group_size
        self.step = 0
        self.converted = False
        self._quantized_layers = []

    # --- fit() hooks ------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.converted:
            raise ValueError(
                "This QuantizationAwareTraining callback already converted its model to quantized layers; "
                "a converted model cannot be trained further. Pass convert_on_train_end=False to keep "
                "training across several fit() calls, then call kerasllm.quantization.convert()."
            )
        model = self.model
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
        """Converts the fake-quantized layers to Keras-quantized ones (`kerasllm.quantization.convert`)."""
        convert(self.model, self.mode, group_size=self.group_size)
        self.converted = True

    def get_state(self):
        return {"step": self.step, "converted": self.converted}

    def set_state(self, state):
        self.step = int(state["step"])
        self.converted = bool(state["converted"])

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
            dense_transforms.add_transform(
                layer, QAT_KEY, kernel_fn=kernel_fn, input_fn=input_fn, priority=QAT_PRIORITY
            )
            object.__setattr__(layer, SPEC_ATTRIBUTE, (self.mode, self.group_size))
        model = self.model
        # Each step function was traced with the float layers; trace them again once, now.
        model.test_function = None
        model.predict_function = None
        model.make_train_function(force=True)
