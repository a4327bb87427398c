import keras
from keras import ops

from kerasllm.quantization.min_max_observer import MinMaxObserver


@keras.saving.register_keras_serializable(package="kerasllm")
class MovingAverageMinMaxObserver(MinMaxObserver):
    """Tracks an exponential moving average of the per-batch minimum and maximum; can be frozen.

    The first batch sets the range to its own minimum and maximum; every later batch moves it as
    `min = momentum * min + (1 - momentum) * batch_min` (and the same for `max`), Keras's
    `BatchNormalization` convention. This is PyTorch's
    `torch.ao.quantization.MovingAverageMinMaxObserver` with `averaging_constant = 1 - momentum`
    (PyTorch's default `0.01` is `momentum=0.99`). One outlier batch moves the range by only
    `1 - momentum` of its excess, unlike `kerasllm.quantization.MinMaxObserver`, whose range only
    grows. Everything else (variables, freezing, the call) is as in `MinMaxObserver`.

    Args:
        momentum: float in `[0, 1)`. Weight of the stored range in each update. Defaults to `0.99`.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: float tensor of any shape.
        training: bool. Whether to update the range. Defaults to the training flag of the enclosing
            call (`False` outside training).

    Returns:
        A tuple `(min_value, max_value)` of float32 scalars: the range to quantize `inputs` with.

    Example:

    >>> observer = kerasllm.quantization.MovingAverageMinMaxObserver(momentum=0.9)
    >>> observer(keras.ops.array([-1.0, 1.0]), training=True)  # first batch: (-1, 1)
    >>> observer(keras.ops.array([-3.0, 2.0]), training=True)
    >>> observer.range()  # (0.9 * -1 + 0.1 * -3, 0.9 * 1 + 0.1 * 2)
    (-1.2, 1.1)

    References:
        - [Jacob et al., 2018](https://arxiv.org/abs/1712.05877)
    """

    def __init__(self, momentum=0.99, **kwargs):
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(
                f"`momentum` must be a number in [0, 1) (the weight of the stored range in each update), "
                f"but got {momentum!r}; e.g. momentum=0.99, or use MinMaxObserver for a running min/max."
            )
        super().__init__(**kwargs)
        self.momentum = float(momentum)

    def update_rule(self, old_min, old_max, batch_min, batch_max):
        """The first batch's range, then `momentum * stored + (1 - momentum) * batch`."""
        first = ops.greater(old_min, old_max)  # (+inf, -inf): nothing observed yet
        momentum = self.momentum
        average_min = ops.add(ops.multiply(momentum, old_min), ops.multiply(1.0 - momentum, batch_min))
        average_max = ops.add(ops.multiply(momentum, old_max), ops.multiply(1.0 - momentum, batch_max))
        return ops.where(first, batch_min, average_min), ops.where(first, batch_max, average_max)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum})
        return config
