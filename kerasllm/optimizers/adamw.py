"""AdamW that records the global gradient norm and matches weight-decay exclusions on variable paths."""

import re

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasllm")
class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that also records the global norm of the last gradients it applied.

    After every update, `optimizer.gradient_norm` (an optimizer variable, saved with the optimizer
    state) holds the global L2 norm of the gradients, measured after loss-scale unscaling and gradient
    accumulation and before clipping: the number to watch for loss spikes. Because it is an optimizer
    variable it is updated inside compiled train steps on every backend, including JAX's stateless
    `stateless_apply` path. With gradient accumulation it keeps the norm of the last real update.

    Weight-decay exclusions (`no_decay`, or `exclude_from_weight_decay(var_names=...)`) match as
    case-insensitive substrings of the variable's name or its full path, so `"norm"` excludes
    `layer_normalization/gamma`. Keras alone matches regexes against the bare name only (`"gamma"`).
    `no_decay` is part of the config, so the exclusions survive saving and loading a model.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`. Defaults to `0.001`.
        weight_decay: float. Decoupled weight decay. Defaults to `0.004`.
        beta_1: float. Decay rate of the first moment. Defaults to `0.9`.
        beta_2: float. Decay rate of the second moment. Defaults to `0.999`.
        epsilon: float. Numerical-stability constant. Defaults to `1e-7`.
        amsgrad: bool. Whether to use AMSGrad. Defaults to `False`.
        clipnorm: float. Per-variable gradient-norm clipping. Defaults to `None`.
        clipvalue: float. Per-element gradient clipping. Defaults to `None`.
        global_clipnorm: float. Global gradient-norm clipping. Defaults to `None`.
        use_ema: bool. Whether to keep an exponential moving average of the weights. Defaults to `False`.
        ema_momentum: float. EMA momentum. Defaults to `0.99`.
        ema_overwrite_frequency: int. How often to overwrite weights with their EMA. Defaults to `None`.
        loss_scale_factor: float. Static loss scale. Defaults to `None`.
        gradient_accumulation_steps: int. Number of batches whose gradients are averaged per update.
            Defaults to `None`.
        no_decay: tuple of str. Substrings of variable names or paths to exclude from weight decay.
            Defaults to `None` (every variable is decayed).
        name: str. Name of the optimizer. Defaults to `None`.
        **kwargs: forwarded to `keras.optimizers.AdamW`.

    Example:

    >>> optimizer = kerasllm.optimizers.AdamW(learning_rate=3e-4, weight_decay=0.1,
    ...                                       global_clipnorm=1.0, no_decay=("bias", "norm"))
    >>> model.compile(optimizer=optimizer, loss=kerasllm.losses.CausalLMLoss())
    >>> model.fit(x, y, epochs=1)
    >>> float(optimizer.gradient_norm)  # norm of the last step's gradients

    References:
        - [Loshchilov and Hutter, 2019](https://arxiv.org/abs/1711.05101)
    """

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        no_decay=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self._gradient_norm = None
        self.no_decay = None
        if no_decay:
            self.exclude_from_weight_decay(var_names=no_decay)

    @property
    def gradient_norm(self):
        """The global gradient norm of the last update (a float32 scalar variable), `None` before build."""
        return self._gradient_norm

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._gradient_norm = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="gradient_norm"
        )

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Excludes variables from weight decay.

        Must be called before the optimizer is built.

        Args:
            var_list: list of `keras.Variable`. Variables to exclude. Defaults to `None`.
            var_names: list of str. Substrings; a variable whose name or path contains any of them
                (case-insensitively) is excluded. Defaults to `None`.
        """
        if isinstance(var_names, str):
            var_names = (var_names,)
        var_names = tuple(var_names) if var_names else None
        super().exclude_from_weight_decay(var_list=var_list, var_names=var_names)
        self.no_decay = var_names
        if var_names:
            self._exclude_from_weight_decay_pattern = re.compile(
                "|".join(re.escape(n) for n in var_names), re.IGNORECASE
            )

    def _use_weight_decay(self, variable):
        if not super()._use_weight_decay(variable):
            return False
        pattern = getattr(self, "_exclude_from_weight_decay_pattern", None)
        path = getattr(variable, "path", None)
        if pattern is not None and path and pattern.search(path):
            self._exclude_from_weight_decay_cache[self._var_key(variable)] = False
            return False
        return True

    def _clip_gradients(self, grads):
        # Every backend's apply path calls this once per real update with the final gradients.
        squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads if g is not None]
        norm = ops.sqrt(ops.sum(ops.stack(squares)))
        if self._gradient_norm is not None:
            self._gradient_norm.assign(norm)
        if self.global_clipnorm and self.global_clipnorm > 0:
            # Same formula as Keras's `clip_by_global_norm`, reusing the norm computed above.
            clip_norm = self.global_clipnorm
            scale = clip_norm * ops.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
            return [g if g is None else g * ops.cast(scale, g.dtype) for g in grads]
        return super()._clip_gradients(grads)

    def get_config(self):
        config = super().get_config()
        config["no_decay"] = list(self.no_decay) if self.no_decay else None
        return config
