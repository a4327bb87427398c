"""Learning-rate schedules."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasllm")
class WarmupCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Linear warmup, then cosine decay: `keras.optimizers.schedules.CosineDecay`, safe to call eagerly.

    Takes the same arguments and gives the same values as Keras's `CosineDecay`: the rate rises
    linearly from `initial_learning_rate` to `warmup_target` over `warmup_steps`, then follows a cosine
    from `warmup_target` down to `alpha * warmup_target` over `decay_steps`, and stays there. Without
    `warmup_target` it is a plain cosine from `initial_learning_rate`.

    Why not Keras's class: with a warmup, Keras's `CosineDecay` picks its branch with `ops.cond` over two
    new lambdas on every call. Inside a compiled train step that is traced once, but on JAX every
    *eager* call (a callback reading `optimizer.learning_rate` to log it, say) traces and keeps both
    branches: about 1.6 MB and a few hundred Python objects per call, without bound (seen on Keras
    3.15.1 / jax 0.10.2). This class computes both branches and selects with `ops.where`, which
    needs no tracing; it is what `kerasllm.optimizers.create_optimizer` uses.

    Args:
        initial_learning_rate: float. Rate at step 0 (the warmup's start).
        decay_steps: int. Length of the cosine decay, after the warmup.
        alpha: float. Final rate as a fraction of the decay's starting rate. Defaults to `0.0`.
        name: str. Defaults to `"WarmupCosineDecay"`.
        warmup_target: float or `None`. Rate at the end of the warmup. Defaults to `None` (no warmup).
        warmup_steps: int. Length of the warmup. Defaults to `0`.

    Example:

    >>> schedule = kerasllm.optimizers.WarmupCosineDecay(
    ...     0.0, decay_steps=900, alpha=0.1, warmup_target=6e-4, warmup_steps=100)
    >>> float(schedule(100))  # the peak
    0.0006
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="WarmupCosineDecay",
                 warmup_target=None, warmup_steps=0):
        super().__init__(initial_learning_rate, decay_steps, alpha=alpha, name=name,
                         warmup_target=warmup_target, warmup_steps=warmup_steps)

    def __call__(self, step):
        initial = ops.convert_to_tensor(self.initial_learning_rate)
        dtype = initial.dtype
        decay_steps = ops.cast(self.decay_steps, dtype)
        step = ops.cast(step, dtype)
        if self.warmup_target is None:
            return self._cosine(ops.minimum(step, decay_steps), decay_steps, initial, dtype)
        target = ops.cast(self.warmup_target, dtype)
        warmup_steps = ops.cast(self.warmup_steps, dtype)
        step = ops.minimum(step, decay_steps + warmup_steps)
        # `maximum(., 1)`: with no warmup the warmup branch is never selected, but must stay finite.
        warmup = initial + (target - initial) * step / ops.maximum(warmup_steps, 1.0)
        decay = self._cosine(ops.maximum(step - warmup_steps, 0.0), decay_steps, target, dtype)
        return ops.where(step < warmup_steps, warmup, decay)

    def _cosine(self, step, decay_steps, decay_from, dtype):
        pi = ops.array(math.pi, dtype=dtype)
        cosine = 0.5 * (1.0 + ops.cos(pi * step / decay_steps))
        return decay_from * ((1 - self.alpha) * cosine + self.alpha)


def eager_safe_schedule(schedule):
    """`schedule`, or a `WarmupCosineDecay` equal to it if it is Keras's `CosineDecay` with a warmup."""
    if type(schedule) is keras.optimizers.schedules.CosineDecay and schedule.warmup_target is not None:
        return WarmupCosineDecay(**schedule.get_config())
    return schedule
