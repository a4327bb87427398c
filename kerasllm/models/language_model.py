"""What `CausalLM` and `MaskedLM` share: the architecture config, input checks and presets."""

import keras
import numpy as np
from keras import ops

from kerasllm.models import lora as lora_lib
from kerasllm.models import prompt_tuning as prompt_lib
from kerasllm.models.transformer_backbone import TransformerBackbone
from kerasllm.utils.collection import collect_once
from kerasllm.utils.validation import validate_token_ids, validate_vocabulary_match

ARCHITECTURE_ARGUMENTS = (
    "vocabulary_size",
    "num_layers",
    "num_heads",
    "hidden_dim",
    "intermediate_dim",
    "max_sequence_length",
    "num_key_value_heads",
    "head_dim",
    "position_embedding",
    "normalization",
    "activation",
    "use_bias",
    "tie_word_embeddings",
    "dropout",
    "layer_norm_epsilon",
    "rope_max_wavelength",
    "remat",
)


class LanguageModel(keras.Model):
    """Base of kerasllm's language models: a `TransformerBackbone` and a vocabulary head.

    Not used directly: see `kerasllm.models.CausalLM` and `kerasllm.models.MaskedLM`, whose docstrings
    list the architecture arguments. Two more arguments restore parameter-efficient fine-tuning when a
    saved model is rebuilt from its config: `lora` (the settings of `enable_lora`) and `prompt_tuning`
    (those of `enable_prompt_tuning`), both `None` by default. `low_rank` (`{path: rank}`, the plan of
    `kerasllm.quantization.factorize`) rebuilds a factorized model with its `LowRankDense` layers.
    """

    causal = True
    presets = {}

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=1024,
        num_key_value_heads=None,
        head_dim=None,
        position_embedding="learned",
        normalization="layernorm",
        activation="gelu",
        use_bias=True,
        tie_word_embeddings=True,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        rope_max_wavelength=10000.0,
        lora=None,
        prompt_tuning=None,
        low_rank=None,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Layers ===
        self.backbone = TransformerBackbone(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            max_sequence_length=max_sequence_length,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            position_embedding=position_embedding,
            normalization=normalization,
            activation=activation,
            use_bias=use_bias,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            rope_max_wavelength=rope_max_wavelength,
            causal=self.causal,
            remat=remat,
            dtype=self.dtype_policy,
            name="backbone",
        )
        self.lm_head = None
        if not tie_word_embeddings:
            self.lm_head = keras.layers.Dense(
                vocabulary_size,
                use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.dtype_policy,
                name="lm_head",
            )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.num_key_value_heads = self.backbone.num_key_value_heads
        self.head_dim = self.backbone.head_dim
        self.position_embedding = position_embedding
        self.normalization = normalization
        self.activation = activation
        self.use_bias = use_bias
        self.tie_word_embeddings = tie_word_embeddings
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rope_max_wavelength = rope_max_wavelength
        self.remat = remat
        self.build((None, None))
        # A saved GPTQ model is rebuilt with GPTQ layers: let them save all their variables again.
        from kerasllm.quantization.calibrated_saving import keep_zero_points

        keep_zero_points(self)
        # A saved factorized model (`kerasllm.quantization.factorize`) is rebuilt with its factors.
        if low_rank:
            from kerasllm.quantization.factorize import apply_low_rank

            apply_low_rank(self, low_rank)
        # A saved model with adapters or a soft prompt is rebuilt with them; its weights load after.
        if prompt_tuning:
            self.enable_prompt_tuning(**prompt_tuning)
        if lora:
            self.enable_lora(**lora)

    def build(self, input_shape=None):
        self.backbone.build()
        if self.lm_head is not None:
            self.lm_head.build((None, None, self.hidden_dim))
        self.built = True

    # --- forward ---------------------------------------------------------------------------------

    def _unpack_inputs(self, inputs):
        if isinstance(inputs, dict):
            if "token_ids" not in inputs:
                raise ValueError(
                    f"Dict inputs must have a 'token_ids' entry (and optionally 'padding_mask'); got keys "
                    f"{sorted(inputs)}."
                )
            token_ids, padding_mask = inputs["token_ids"], inputs.get("padding_mask")
        else:
            token_ids, padding_mask = inputs, None
        token_ids = ops.convert_to_tensor(token_ids)
        dtype = keras.backend.standardize_dtype(token_ids.dtype)
        if "int" not in dtype:
            raise ValueError(
                f"{type(self).__name__} takes integer token ids, but got a {dtype} tensor. Tokenize text "
                "with a `kerasllm.tokenizers` tokenizer, or cast whole-number ids with `.astype('int32')`."
            )
        if len(token_ids.shape) != 2:
            raise ValueError(
                f"{type(self).__name__} takes token ids of shape (batch, sequence), got shape "
                f"{tuple(token_ids.shape)}. Add a batch axis with `ids[None]` for a single sequence."
            )
        length = token_ids.shape[1]
        if length is not None:
            # Called unbound by `SequenceClassifier` too, so name the class explicitly.
            LanguageModel._check_room_for_prompt(self, length)
        if length is not None and length > self.max_sequence_length:
            raise ValueError(
                f"Input sequences have length {length}, longer than the model's max_sequence_length "
                f"{self.max_sequence_length}. Use shorter windows or build the model with a larger "
                "`max_sequence_length`."
            )
        return token_ids, padding_mask

    def logits(self, hidden):
        """Vocabulary logits (float32) from final hidden states `(B, T, C)`."""
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            logits = self.backbone.token_embedding(hidden, reverse=True)
        return ops.cast(logits, "float32")

    def __call__(self, inputs, *args, **kwargs):
        # Values can only be read outside a traced step: host data (NumPy arrays, lists) handed to
        # `model(x)` is checked here, before Keras turns it into backend tensors. Without it JAX
        # returns NaN rows for ids >= vocabulary_size and wraps negative ids, silently.
        token_ids = inputs.get("token_ids") if isinstance(inputs, dict) else inputs
        if isinstance(token_ids, (np.ndarray, list)):
            self.check_token_ids(np.asarray(token_ids), name="inputs")
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None):
        token_ids, padding_mask = self._unpack_inputs(inputs)
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training)
        return self.logits(hidden)  # (B, T, V)

    # --- input checks outside the compiled step ---------------------------------------------------

    def _check_room_for_prompt(self, length):
        prefix = self.num_virtual_tokens
        if prefix and length + prefix > self.max_sequence_length:
            raise ValueError(
                f"Input sequences of length {length} plus the {prefix} virtual tokens of the soft prompt "
                f"exceed the model's max_sequence_length {self.max_sequence_length} by "
                f"{length + prefix - self.max_sequence_length}. Use sequences of at most "
                f"{self.max_sequence_length - prefix} tokens, or fewer virtual tokens."
            )

    def check_token_ids(self, token_ids, name="token_ids"):
        """Raises a `ValueError` naming the fix if `token_ids` cannot be fed to this model."""
        shape = getattr(token_ids, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] is not None:
            self._check_room_for_prompt(int(shape[1]))
        return validate_token_ids(
            token_ids, vocabulary_size=self.vocabulary_size, max_length=self.max_input_length, name=name, ranks=(2,)
        )

    def check_tokenizer(self, tokenizer):
        """Raises a `ValueError` if `tokenizer` produces ids outside this model's vocabulary."""
        validate_vocabulary_match(tokenizer.vocabulary_size, self.vocabulary_size)

    def _check_data(self, x):
        """Cheap checks of user data before Keras compiles a step: arrays are scanned once, datasets
        that declare their vocabulary (kerasllm's own) are compared with the model's."""
        if x is None:
            return
        if isinstance(x, dict) and "token_ids" in x:
            x = x["token_ids"]
        if isinstance(x, (np.ndarray, list)) or (hasattr(x, "shape") and hasattr(x, "dtype")):
            try:
                array = np.asarray(x)
            except Exception:  # a symbolic tensor cannot be read eagerly: the model's own checks apply
                return
            self.check_token_ids(array, name="x")
            return
        vocabulary_size = getattr(x, "vocabulary_size", None)
        if vocabulary_size is not None:
            validate_vocabulary_match(vocabulary_size, self.vocabulary_size, what="dataset")
        sequence_length = getattr(x, "sequence_length", None)
        if sequence_length is not None and sequence_length > self.max_input_length:
            room = "" if not self.num_virtual_tokens else f" ({self.num_virtual_tokens} positions go to the soft prompt)"
            raise ValueError(
                f"The dataset yields sequences of length {sequence_length}, longer than the model's "
                f"max_sequence_length {self.max_sequence_length}{room}. Build the data with "
                f"`sequence_length={self.max_input_length}` or less, or the model with a larger "
                "`max_sequence_length`."
            )

    def compile(self, *args, jit_compile="auto", **kwargs):
        if jit_compile == "auto" and keras.backend.backend() == "tensorflow":
            from kerasllm.utils import backend_distribution

            # Keras leaves XLA off for TensorFlow on CPU-only machines; every op of these models
            # compiles under XLA, and the training step runs ~1.5x faster with it
            # (benchmarks/train_throughput.py, docs/benchmarks.md). Under a MirroredStrategy with several
            # replicas Keras 3.15's XLA step reads variables across devices and fails, so it stays off.
            jit_compile = backend_distribution.tf_replicas_in_scope() == 1
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        # Keras skips restoring the compiled state of models that override `compile()`; ours only
        # changes a default, so restore it exactly as `keras.Model.compile_from_config` does.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if hasattr(self, "optimizer") and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_data(x)
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            self._check_data(validation_data[0] if isinstance(validation_data, tuple) else validation_data)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data(x)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_data(x)
        return super().predict(x, *args, **kwargs)

    # --- parameter-efficient fine-tuning ------------------------------------------------------------

    @property
    def num_virtual_tokens(self):
        """Length of the soft prompt (`0` without prompt tuning)."""
        return self.backbone.num_virtual_tokens

    @property
    def max_input_length(self):
        """Longest input in real tokens: `max_sequence_length` minus the soft prompt's length."""
        return self.max_sequence_length - self.num_virtual_tokens

    def enable_lora(self, rank, alpha=None, target_layers=("query", "value")):
        """Adds LoRA adapters to the named `Dense` sublayers and freezes every other variable.

        Built on Keras's `keras.layers.Dense.enable_lora`: an adapted layer computes
        `x @ (W + (alpha / rank) * A @ B)` with `A` He-uniform and `B` zero, so outputs are unchanged
        until training moves `B`. Works on an int8-quantized model (`model.quantize("int8")` first:
        QLoRA style). Compile after enabling, so the optimizer sees the new trainable variables. The
        settings are part of `get_config()`, so a saved model reloads with adapters.
        Saving to `.keras` stores each adapted kernel with the adapters folded in (Keras's behaviour):
        a reloaded model computes the same outputs and its adapters restart from zero.

        Args:
            rank: int. Rank of each adapter, at least 1.
            alpha: float. The update is scaled by `alpha / rank`. Defaults to `rank` (scale 1).
            target_layers: str or tuple of str. Names of the `Dense` sublayers to adapt: `"query"`,
                `"key"`, `"value"`, `"output"` (attention and feed-forward outputs), `"intermediate"`,
                `"gate"` (SwiGLU), `"lm_head"` (untied head). Defaults to `("query", "value")`.

        Example:

        >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=512)
        >>> model.enable_lora(rank=8, target_layers=("query", "value"))
        >>> model.compile(optimizer="adamw", loss=kerasllm.losses.CausalLMLoss())

        References:
            - [Hu et al., 2021](https://arxiv.org/abs/2106.09685)
        """
        lora_lib.enable_lora(self, rank, alpha=alpha, target_layers=target_layers)

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Keras's `Model.quantize`, with one garbage collection instead of one per replaced kernel.

        Keras runs a full `gc.collect()` for every variable a layer deletes; see
        `kerasllm.utils.collection.collect_once`. `kerasllm.quantization.quantize` adds argument checks,
        GPTQ calibration from text, and a model that is never left half-converted.

        `"gptq"` and `"awq"` are refused: Keras 3.15's calibration for them never sees the
        activations (keras-team/keras#23512), so they return round-to-nearest weights under another
        name. `kerasllm.quantization.quantize(model, "gptq", ...)` computes GPTQ itself.
        """
        requested = mode if mode is not None else getattr(config, "mode", None)
        if requested in ("gptq", "awq"):
            raise ValueError(
                f"Keras {keras.__version__}'s model.quantize({requested!r}) does not calibrate: its hooks "
                "never see the calibration activations (keras-team/keras#23512), so the weights come out "
                "round-to-nearest. Use kerasllm.quantization.quantize(model, 'gptq', calibration_data=..., "
                "tokenizer=...), which computes GPTQ into Keras's gptq layers, or mode='int4'."
            )
        with collect_once():
            return super().quantize(mode, config=config, filters=filters, **kwargs)

    def merge_lora(self):
        """Folds the LoRA adapters into the kernels, removes them and unfreezes the model."""
        lora_lib.merge_lora(self)

    def save_lora_weights(self, path):
        """Saves only the LoRA adapters, with rank, alpha and targets, to a `.npz` file at `path`."""
        lora_lib.save_lora_weights(self, path)

    def load_lora_weights(self, path):
        """Loads adapters saved by `save_lora_weights` (enabling LoRA with the file's settings if needed).

        Raises:
            ValueError: if LoRA is already enabled with another rank, alpha or targets, or the file's
                adapters do not fit this architecture.
        """
        lora_lib.load_lora_weights(self, path)

    def enable_prompt_tuning(self, num_virtual_tokens, initializer="vocabulary", seed=None):
        """Prepends a trainable soft prompt to every input and freezes every other variable.

        Outputs keep their shape `(B, T, V)`: they and the loss cover the real tokens only. Inputs may
        then hold at most `max_sequence_length - num_virtual_tokens` tokens. `generate` uses the
        prompt (its key/value cache holds the virtual tokens too). The setting is part of
        `get_config()`, so a saved model reloads with its prompt.

        Args:
            num_virtual_tokens: int. Length of the soft prompt.
            initializer: str. `"vocabulary"` (embeddings of tokens drawn at random from the
                vocabulary, as Lester et al.) or `"random"` (normal, standard deviation 0.02).
                Defaults to `"vocabulary"`.
            seed: int. Seed of that draw. Defaults to `None`.

        Example:

        >>> model.enable_prompt_tuning(num_virtual_tokens=20)
        >>> model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=kerasllm.losses.CausalLMLoss())

        References:
            - [Lester et al., 2021](https://arxiv.org/abs/2104.08691)
        """
        prompt_lib.enable_prompt_tuning(self, num_virtual_tokens, initializer=initializer, seed=seed)

    def save_prompt(self, path):
        """Saves only the soft prompt to a `.npz` file at `path`."""
        prompt_lib.save_prompt(self, path)

    def load_prompt(self, path):
        """Loads a soft prompt saved by `save_prompt` (enabling prompt tuning if needed)."""
        prompt_lib.load_prompt(self, path)

    # --- parallelism -------------------------------------------------------------------------------

    def get_layout_map(
        self, device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch", max_replicated_size=2**20
    ):
        """Megatron-style `keras.distribution.LayoutMap` for this model.

        See `kerasllm.distribution.get_layout_map` for the rules and the errors it raises.

        Args:
            device_mesh: `keras.distribution.DeviceMesh`. The mesh the weights are split over.
            model_parallel_dim_name: str. Mesh axis weights are split along. Defaults to `"model"`.
            data_parallel_dim_name: str. Mesh axis batches are split along. Defaults to `"batch"`.
            max_replicated_size: int. A larger weight that no rule covers raises an error. Defaults
                to `2**20`.

        Returns:
            A `keras.distribution.LayoutMap`.
        """
        from kerasllm.distribution import layout_map as layout_map_lib

        return layout_map_lib.get_layout_map(
            self, device_mesh, model_parallel_dim_name, data_parallel_dim_name, max_replicated_size
        )

    # --- presets and config ------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name, **overrides):
        """Builds a model from a named architecture preset, with any argument overridden.

        Weights are freshly initialized: kerasllm trains from scratch (no hub downloads).

        Args:
            name: str. One of `cls.presets` (see `kerasllm.models.CausalLM.presets`).
            **overrides: architecture or Keras arguments that replace the preset's values
                (e.g. `vocabulary_size=tokenizer.vocabulary_size`, `dtype="mixed_bfloat16"`).
        """
        if name not in cls.presets:
            raise ValueError(
                f"Unknown {cls.__name__} preset {name!r}. Available presets: {', '.join(sorted(cls.presets))}. "
                f"Or build the model directly, e.g. `kerasllm.models.{cls.__name__}(vocabulary_size=..., "
                "num_layers=..., num_heads=..., hidden_dim=..., intermediate_dim=...)`."
            )
        config = dict(cls.presets[name])
        config.update(overrides)
        return cls(**config)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in ARCHITECTURE_ARGUMENTS})
        prompt_tuning = prompt_lib.prompt_tuning_config(self)
        config["lora"] = lora_lib.lora_config(self)
        from kerasllm.quantization.factorize import low_rank_config

        config["low_rank"] = low_rank_config(self) or None
        config["prompt_tuning"] = None if prompt_tuning is None else dict(prompt_tuning, initializer="random")
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
