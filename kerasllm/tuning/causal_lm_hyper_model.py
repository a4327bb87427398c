"""`CausalLMHyperModel`: a KerasTuner `HyperModel` that builds, compiles and trains a `CausalLM` per trial."""

import keras

from kerasllm.tuning.dependency import import_keras_tuner
from kerasllm.tuning.search_space import LOG_ENTRIES, SearchSpace
from kerasllm.tuning.step_batches import StepBatches, token_windows, validation_inputs
from kerasllm.utils.backend_gradients import forget_custom_gradients

keras_tuner = import_keras_tuner()


class CausalLMHyperModel(keras_tuner.HyperModel):
    """A KerasTuner `HyperModel` over a `kerasllm.models.CausalLM` and its training recipe.

    `build(hp)` makes a `CausalLM` from `base_config` with the trial's width / depth, and compiles it
    with the project's recipe (`kerasllm.optimizers.create_optimizer`: AdamW, linear warmup, cosine
    decay over the trial's steps, gradient clipping) at the trial's learning rate, warmup and weight
    decay, `kerasllm.losses.CausalLMLoss` and `kerasllm.metrics.Perplexity`. `fit(hp, model, x,
    validation_data=...)` re-batches the training windows to the trial's batch size and trains exactly
    `steps // epochs` optimizer steps per epoch, validating after each; the objective is `val_loss`.

    Every trial starts from the same seed, so trials with the same architecture start from the same
    weights and see the training windows in the same order: they differ only in what is searched.

    Args:
        base_config: str or dict. A `CausalLM` preset name, or a dict of `CausalLM` arguments; a dict
            may name a `"preset"` whose arguments the others override (e.g. `{"preset": "tiny",
            "vocabulary_size": 300}`).
        search_space: `kerasllm.tuning.SearchSpace`. What to search. Defaults to `SearchSpace()`.
        steps: int. Optimizer steps of a trial (with `epochs > 1`: of one that trains every epoch).
            Defaults to `100`.
        learning_rate: float. Peak learning rate when the space does not search it. Defaults to `2e-3`.
        warmup_steps: int. Warmup steps when the space does not search them. Defaults to `None` (5% of
            the steps).
        batch_size: int. Batch size when the space does not search it. Defaults to `None` (the
            training dataset's, or 32 for a token array).
        weight_decay: float. AdamW weight decay when the space does not search it. Defaults to `0.1`.
        sequence_length: int. Tokens per example when data comes as a 1-D token array. Defaults to
            `None` (datasets carry their own).
        epochs: int. How many validated slices the steps are cut into (Hyperband's resource: a trial
            trains `epochs * (steps // epochs)` steps at most). Defaults to `1`.
        seed: int. Seed of the weights and of the data order of every trial. Defaults to `0`.
        jit_compile: bool or `"auto"`. `model.compile`'s `jit_compile`. Defaults to `"auto"`.
        run_eagerly: bool. `model.compile`'s `run_eagerly`: no compilation per trial, which can
            outweigh trials of a few steps of a small model. Defaults to `False`.
        name: str. Name of the hypermodel. Defaults to `None`.
        tunable: bool. KerasTuner's `tunable`. Defaults to `True`.

    Example:

    ```python
    hypermodel = kerasllm.tuning.CausalLMHyperModel(
        {"preset": "tiny", "vocabulary_size": tokenizer.vocabulary_size},
        kerasllm.tuning.SearchSpace(learning_rate=(3e-4, 3e-3), batch_size=(8, 16)), steps=200)
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_loss", max_trials=8)
    tuner.search(train, validation_data=val)
    ```
    """

    def __init__(
        self,
        base_config,
        search_space=None,
        steps=100,
        learning_rate=2e-3,
        warmup_steps=None,
        batch_size=None,
        weight_decay=0.1,
        sequence_length=None,
        epochs=1,
        seed=0,
        jit_compile="auto",
        run_eagerly=False,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        if search_space is None:
            search_space = SearchSpace()
        if not isinstance(search_space, SearchSpace):
            raise ValueError(
                f"`search_space` must be a `kerasllm.tuning.SearchSpace`, but got {type(search_space).__name__}. "
                "Build one, e.g. `kerasllm.tuning.SearchSpace(learning_rate=(1e-4, 3e-3))`."
            )
        for value, label in ((steps, "steps"), (epochs, "epochs")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{label}` must be a positive integer, but got {value!r}.")
        if steps < epochs:
            raise ValueError(
                f"`steps={steps}` is fewer than `epochs={epochs}`: every epoch needs at least one step. "
                "Raise `steps` or lower `epochs`."
            )
        self.base_config = base_config
        self.search_space = search_space
        self.steps = steps
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.sequence_length = sequence_length
        self.epochs = epochs
        self.seed = int(seed)
        self.jit_compile = jit_compile
        self.run_eagerly = bool(run_eagerly)
        self.steps_per_epoch = steps // epochs
        self.total_steps = self.steps_per_epoch * epochs
        self.base_model_config = resolve_model_config(base_config)
        search_space.check_model(self.base_model_config, self.total_steps)
        if warmup_steps is not None and search_space.warmup_steps is None and warmup_steps >= self.total_steps:
            raise ValueError(
                f"`warmup_steps={warmup_steps}` is not shorter than a trial's {self.total_steps} steps. Use "
                "fewer warmup steps or more `steps`."
            )

    def declare_hyperparameters(self, hp):
        for name in self.search_space.entries():
            self._value(hp, name)

    def _value(self, hp, name):
        """The trial's value of a space entry (registering it with `hp`), or `None` if not in the space."""
        value = getattr(self.search_space, name)
        if value is None:
            return None
        if isinstance(value, tuple):
            sampling = "log" if name in LOG_ENTRIES else "linear"
            return hp.Float(name, min_value=value[0], max_value=value[1], sampling=sampling)
        if isinstance(value, list) and len(value) > 1:
            return hp.Choice(name, value)
        return hp.Fixed(name, value[0] if isinstance(value, list) else value)

    def model_config(self, hp):
        """The `CausalLM` arguments of a trial: the base config with the trial's architecture values."""
        config = dict(self.base_model_config)
        for name in ("hidden_dim", "intermediate_dim", "num_layers"):
            value = self._value(hp, name)
            if value is not None:
                config[name] = value
        if self.search_space.hidden_dim is not None and self.search_space.intermediate_dim is None:
            config["intermediate_dim"] = 4 * config["hidden_dim"]
        return config

    def training_config(self, hp):
        """The trial's `learning_rate`, `warmup_steps`, `weight_decay` and `batch_size` (`None`: the data's)."""
        config = {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                  "weight_decay": self.weight_decay, "batch_size": self.batch_size}
        for name in config:
            value = self._value(hp, name)
            if value is not None:
                config[name] = value
        return config

    def build(self, hp):
        import kerasllm

        keras.utils.set_random_seed(self.seed)
        model = kerasllm.models.CausalLM(**self.model_config(hp))
        training = self.training_config(hp)
        optimizer = kerasllm.optimizers.create_optimizer(
            learning_rate=training["learning_rate"], total_steps=self.total_steps,
            warmup_steps=training["warmup_steps"], weight_decay=training["weight_decay"],
        )
        model.compile(optimizer=optimizer, loss=kerasllm.losses.CausalLMLoss(),
                      metrics=[kerasllm.metrics.Perplexity()], run_eagerly=self.run_eagerly,
                      jit_compile=False if self.run_eagerly else self.jit_compile)
        # Built now, so that Hyperband's checkpoint of an earlier round restores the optimizer state too.
        optimizer.build(model.trainable_variables)
        return model

    def fit(self, hp, model, x, validation_data=None, epochs=None, initial_epoch=0, callbacks=None, verbose=0,
            **kwargs):
        windows, vocabulary_size = token_windows(x, self.sequence_length)
        batch_size = self.training_config(hp)["batch_size"] or getattr(x, "batch_size", None) or 32
        epochs = self.epochs if epochs is None else epochs
        batches = StepBatches(windows, batch_size, self.steps_per_epoch, seed=self.seed,
                              vocabulary_size=vocabulary_size, initial_epoch=initial_epoch)
        if initial_epoch:
            # Hyperband continues a trial from the checkpoint of its best epoch so far: continue the
            # schedule where the round ended rather than where that epoch did (or warming up again).
            model.optimizer.iterations.assign(initial_epoch * self.steps_per_epoch)
        # The trial's model is dropped after this fit: on TensorFlow its traced steps would otherwise
        # stay in memory for the rest of the search, a whole model each.
        with forget_custom_gradients():
            return model.fit(
                batches, validation_data=validation_inputs(validation_data, self.sequence_length), epochs=epochs,
                initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose, **kwargs,
            )


def resolve_model_config(base_config):
    """`CausalLM` arguments from a preset name or a dict (optionally naming a `"preset"` to override)."""
    import kerasllm

    presets = kerasllm.models.CausalLM.presets
    if isinstance(base_config, str):
        base_config = {"preset": base_config}
    if not isinstance(base_config, dict):
        raise ValueError(
            f"`base_config` must be a CausalLM preset name or a dict of CausalLM arguments, but got "
            f"{type(base_config).__name__}. Presets: {', '.join(sorted(presets))}."
        )
    config = dict(base_config)
    preset = config.pop("preset", None)
    if preset is not None:
        if preset not in presets:
            raise ValueError(
                f"Unknown CausalLM preset {preset!r}. Available presets: {', '.join(sorted(presets))}, or "
                "pass a dict of CausalLM arguments."
            )
        config = {**presets[preset], **config}
    missing = [k for k in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim")
               if k not in config]
    if missing:
        raise ValueError(
            f"`base_config` lacks {missing}. Name a `\"preset\"` in it, or give every CausalLM architecture "
            "argument."
        )
    return config
