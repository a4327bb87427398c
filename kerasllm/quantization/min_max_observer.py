import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasllm")
class MinMaxObserver(keras.layers.Layer):
    """Tracks the running minimum and maximum of the tensors it sees while training; can be frozen.

    The range lives in two non-trainable float32 variables, `min_value` (starts at `+inf`) and
    `max_value` (starts at `-inf`), as PyTorch's `torch.ao.quantization.MinMaxObserver` keeps them.
    Calling the observer with `training=True` (or inside a model called with `training=True`: the
    flag propagates to nested layers as it does for `keras.layers.BatchNormalization`) updates them
    with the batch's minimum and maximum over all elements (one per-tensor range) and returns the
    updated range; with `training=False`, or once frozen, it returns the stored range and leaves it
    alone. The update is a variable assignment in the forward pass, as `BatchNormalization` updates
    its moving statistics, so it runs inside the compiled training step on every backend (on JAX the
    trainer carries it as non-trainable state). Freezing is a third variable, `frozen`, read inside
    the step: freezing needs no re-tracing and is saved with the weights.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: float tensor of any shape.
        training: bool. Whether to update the range. Defaults to the training flag of the enclosing
            call (`False` outside training).

    Returns:
        A tuple `(min_value, max_value)` of float32 scalars: the range to quantize `inputs` with
        (including `inputs` themselves when the observer updated on them).

    Example:

    >>> observer = kerasllm.quantization.MinMaxObserver()
    >>> observer(keras.ops.array([[-1.0, 2.0]]), training=True)
    >>> observer(keras.ops.array([[0.5, 3.0]]), training=True)
    >>> observer.range()
    (-1.0, 3.0)
    >>> observer.freeze()
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.min_value = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(float("inf")), trainable=False,
            name="min_value", dtype="float32",
        )
        self.max_value = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(float("-inf")), trainable=False,
            name="max_value", dtype="float32",
        )
        self.frozen_flag = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="frozen", dtype="float32"
        )
        self.built = True

    def call(self, inputs, training=None):
        if not training:
            return ops.convert_to_tensor(self.min_value), ops.convert_to_tensor(self.max_value)
        x = ops.stop_gradient(ops.cast(inputs, "float32"))
        old_min = ops.convert_to_tensor(self.min_value)
        old_max = ops.convert_to_tensor(self.max_value)
        new_min, new_max = self.update_rule(old_min, old_max, ops.min(x), ops.max(x))
        frozen = ops.greater(ops.convert_to_tensor(self.frozen_flag), 0.0)
        new_min = ops.where(frozen, old_min, new_min)
        new_max = ops.where(frozen, old_max, new_max)
        self.min_value.assign(new_min)
        self.max_value.assign(new_max)
        return new_min, new_max

    def update_rule(self, old_min, old_max, batch_min, batch_max):
        """The new range from the stored one and the batch's: the running minimum and maximum."""
        return ops.minimum(old_min, batch_min), ops.maximum(old_max, batch_max)

    # --- host-side control -----------------------------------------------------------------------

    @property
    def frozen(self):
        """Whether the range has stopped updating."""
        return bool(ops.convert_to_numpy(self.frozen_flag) > 0)

    def freeze(self):
        """Stops updating the range (takes effect in the next step, without re-tracing)."""
        self.frozen_flag.assign(1.0)

    def unfreeze(self):
        """Resumes updating the range."""
        self.frozen_flag.assign(0.0)

    @property
    def observed(self):
        """Whether the observer has seen at least one batch (its range is finite)."""
        low, high = self.range()
        return low <= high

    def range(self):
        """The stored range as Python floats `(min, max)`; `(inf, -inf)` before the first batch."""
        return float(ops.convert_to_numpy(self.min_value)), float(ops.convert_to_numpy(self.max_value))

    def set_range(self, min_value, max_value):
        """Sets the stored range (e.g. restored from `QuantizationAwareTraining.get_state()`)."""
        self.min_value.assign(float(min_value))
        self.max_value.assign(float(max_value))

    def get_config(self):
        return super().get_config()
