"""What `CausalLM` and `MaskedLM` share: the architecture config, input checks and presets."""

import os

import keras
import numpy as np
from keras import ops

from kerasllm.layers.normalization import normalization_layer
from kerasllm.models import lora as lora_lib
from kerasllm.models import prompt_tuning as prompt_lib
from kerasllm.models.transformer_backbone import TransformerBackbone
from kerasllm.utils import backend_train_step
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
# Options for the quirks of pretrained families, passed to the backbone as they are.
BACKBONE_OPTIONS = (
    "qkv_bias",
    "mlp_bias",
    "rope_scaling",
    "sliding_window",
    "layer_types",
    "sliding_rope_max_wavelength",
    "sliding_rope_scaling",
    "qk_norm",
    "qk_norm_epsilon",
    "query_pre_attn_scalar",
    "embedding_scale",
    "normalize_first",
    "sandwich_norm",
    "num_segments",
    "embedding_norm",
)
HEAD_OPTIONS = ("final_logit_softcapping", "head_transform", "head_bias")
ARCHITECTURE_ARGUMENTS += BACKBONE_OPTIONS + HEAD_OPTIONS

# The activation `head_transform` applies, by the model's `activation`.
_HEAD_ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=True),
    "gelu_exact": lambda x: ops.gelu(x, approximate=False),
    "relu": ops.relu,
}


class LanguageModel(keras.Model):
    """Base of kerasllm's language models: a `TransformerBackbone` and a vocabulary head.

    Not used directly: see `kerasllm.models.CausalLM` and `kerasllm.models.MaskedLM`, whose docstrings
    list the architecture arguments; the options for the quirks of pretrained families
    (`qkv_bias`, `rope_scaling`, `sliding_window`, `qk_norm`, ...) are those of
    `kerasllm.models.TransformerBackbone`. Three options shape the vocabulary head:
    `final_logit_softcapping` (float: logits become `cap * tanh(logits / cap)`, Gemma),
    `head_transform` (bool: a dense layer, the activation and a norm before the vocabulary
    projection, sublayers `head_dense` and `head_norm`, BERT) and `head_bias` (bool: a bias per
    vocabulary entry, BERT). Two more arguments restore parameter-efficient fine-tuning when a
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
        final_logit_softcapping=None,
        head_transform=False,
        head_bias=False,
        **kwargs,
    ):
        options = {name: kwargs.pop(name) for name in BACKBONE_OPTIONS if name in kwargs}
        super().__init__(**kwargs)
        if head_transform and activation not in _HEAD_ACTIVATIONS:
            raise ValueError(
                f"`head_transform=True` applies the model's activation, which must be one of "
                f"{sorted(_HEAD_ACTIVATIONS)}; got activation={activation!r}."
            )
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
            **options,
            dtype=self.dtype_policy,
            name="backbone",
        )
        self.head_dense = self.head_norm = None
        if head_transform:
            self.head_dense = keras.layers.Dense(
                hidden_dim,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.dtype_policy,
                name="head_dense",
            )
            self.head_norm = normalization_layer(normalization, layer_norm_epsilon, "head_norm", self.dtype_policy)
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
        for name in BACKBONE_OPTIONS:  # normalized by the backbone (e.g. `qkv_bias=None` -> `use_bias`)
            setattr(self, name, getattr(self.backbone, name))
        self.final_logit_softcapping = final_logit_softcapping
        self.head_transform = head_transform
        self.head_bias = head_bias
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
        if self.head_dense is not None:
            self.head_dense.build((None, None, self.hidden_dim))
            self.head_norm.build((None, None, self.hidden_dim))
        if self.lm_head is not None:
            self.lm_head.build((None, None, self.hidden_dim))
        if self.head_bias and not hasattr(self, "logit_bias"):
            self.logit_bias = self.add_weight(name="logit_bias", shape=(self.vocabulary_size,), initializer="zeros")
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
            # `teacher_*` entries are a `TeacherLogitsCache`'s targets, read by the distillation loss.
            unknown = sorted(
                k for k in inputs
                if k not in ("token_ids", "padding_mask", "segment_ids") and not k.startswith("teacher_")
            )
            if unknown:
                raise ValueError(
                    f"Unknown input keys {unknown}; a kerasllm model takes 'token_ids', 'padding_mask' and "
                    "(with segment embeddings) 'segment_ids'."
                )
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
        if self.head_dense is not None:
            hidden = self.head_norm(_HEAD_ACTIVATIONS[self.activation](self.head_dense(hidden)))
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            logits = self.backbone.token_embedding(hidden, reverse=True)
        logits = ops.cast(logits, "float32")
        if self.head_bias:
            logits = logits + ops.cast(self.logit_bias, "float32")
        if self.final_logit_softcapping is not None:
            cap = float(self.final_logit_softcapping)
            logits = ops.tanh(logits / cap) * cap
        return logits

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
        segment_ids = inputs.get("segment_ids") if isinstance(inputs, dict) else None
        hidden = self.backbone(token_ids, padding_mask=padding_mask, training=training, segment_ids=segment_ids)
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

    def make_train_function(self, force=False):
        return self._traced_function("train_function", super().make_train_function, force, self.train_step, True)

    def make_test_function(self, force=False):
        return self._traced_function("test_function", super().make_test_function, force, self.test_step)

    def make_predict_function(self, force=False):
        return self._traced_function("predict_function", super().make_predict_function, force, self.predict_step)

    def _traced_function(self, attribute, make_keras_function, force, step, differentiate=False):
        # Keras's torch.compile path recompiles on every layer and ends slower than eager; on torch with
        # jit_compile=True, trace the step into one aten graph instead (kerasllm/utils/backend_train_step.py).
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        function = make_keras_function(force=force)
        if backend_train_step.compiles(self):
            function = backend_train_step.compile_step(self, step, differentiate=differentiate)
            setattr(self, attribute, function)
        return function

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
    def from_preset(cls, preset, **overrides):
        """Builds a model from a named architecture preset, or loads a pretrained Hugging Face checkpoint.

        A preset name (`cls.presets`, e.g. `"tiny"`) gives a freshly initialized model. A directory
        holding a Hugging Face checkpoint (`config.json` and `model.safetensors`, or shards with
        `model.safetensors.index.json`, as `save_pretrained` writes them) gives that model with its
        weights: GPT-2, Llama 2 and 3.x, Mistral, Qwen2/2.5, Qwen3 and Gemma 3 (text) for `CausalLM`,
        BERT for `MaskedLM`. Every tensor is read from the memory-mapped file straight into its
        variable, in the dtype policy's variable dtype. A config option kerasllm cannot reproduce
        exactly, or weights that do not match their config, raise a `ValueError` naming the option
        or tensor; a model is never half loaded. Load the vocabulary with
        `kerasllm.tokenizers.load(directory)`.

        Args:
            preset: str. A preset name, or the path of a Hugging Face model directory.
            **overrides: arguments that replace the preset's values (e.g.
                `vocabulary_size=tokenizer.vocabulary_size`); for a checkpoint, training options such as
                `dropout` or `remat`, a shorter `max_sequence_length` (rotary models), and `dtype`
                (e.g. `"bfloat16"`, `"mixed_bfloat16"`; defaults to Keras's float32).

        Example:

        >>> model = kerasllm.models.CausalLM.from_preset("tiny", vocabulary_size=2048)
        >>> model = kerasllm.models.CausalLM.from_preset("./Llama-3.2-1B", dtype="bfloat16")
        >>> tokenizer = kerasllm.tokenizers.load("./Llama-3.2-1B")
        """
        from kerasllm.models import hugging_face

        if isinstance(preset, str) and preset in cls.presets:
            config = dict(cls.presets[preset])
            config.update(overrides)
            return cls(**config)
        if hugging_face.is_model_directory(preset):
            return cls._from_hugging_face(preset, overrides)
        if isinstance(preset, (str, os.PathLike)) and os.path.isdir(preset):
            hugging_face.config.read_config(preset)  # raises, naming the missing config.json
        raise ValueError(
            f"Unknown {cls.__name__} preset {preset!r}: neither a preset name ({', '.join(sorted(cls.presets))}) "
            "nor a folder holding a Hugging Face checkpoint (config.json and *.safetensors). Or build the model "
            f"directly, e.g. `kerasllm.models.{cls.__name__}(vocabulary_size=..., num_layers=..., num_heads=..., "
            "hidden_dim=..., intermediate_dim=...)`."
        )

    @classmethod
    def from_keras_hub(cls, model, dtype=None, max_sequence_length=None):
        """Converts a KerasHub model you already have into a kerasllm model with identical logits.

        Supports `keras_hub.models.GPT2CausalLM`, `LlamaCausalLM`, `Llama3CausalLM`,
        `MistralCausalLM`, `QwenCausalLM` (Qwen2), `Qwen3CausalLM` and text-only `Gemma3CausalLM`, or
        their backbones. Every weight is copied (no random initialization first); a KerasHub option
        kerasllm cannot reproduce exactly (e.g. attention logit soft-capping, a vision encoder)
        raises a `ValueError` naming it. Tested against KerasHub's own logits on all three backends.

        Args:
            model: a KerasHub task model or backbone.
            dtype: str or `keras.DTypePolicy`. Defaults to the KerasHub model's dtype policy.
            max_sequence_length: int. Longest input. Defaults to the position table for learned
                positions, else 131072 (rotary models have no table to size).

        Example:

        >>> hub_model = keras_hub.models.Llama3CausalLM.from_preset("llama3.2_1b")
        >>> model = kerasllm.models.CausalLM.from_keras_hub(hub_model)
        """
        from kerasllm.models.keras_hub import from_keras_hub

        return from_keras_hub(cls, model, dtype=dtype, max_sequence_length=max_sequence_length)

    @classmethod
    def _from_hugging_face(cls, directory, overrides):
        from kerasllm.models.hugging_face import loading

        task = "causal_lm" if cls.causal else "masked_lm"
        family, _, config = loading.read_model_config(directory, task)
        config.update(overrides)
        return loading.load_weights_into_new_model(lambda c: cls(**c), directory, family, config, task)

    def export_to_transformers(
        self, directory, tokenizer=None, dtype=None, model_type=None, max_shard_size="5GB", overwrite=False
    ):
        """Writes the model as a Hugging Face model directory that `transformers` loads as is.

        `transformers.AutoModelForCausalLM.from_pretrained(directory)` (`AutoModelForMaskedLM` for a
        `MaskedLM`) then computes the same logits. The family is the one whose options the model uses
        (GPT-2 style presets export as `gpt2`, Llama style as `llama`; a loaded checkpoint as its own
        family), or `model_type`. What the model computes is written: LoRA adapters merged, pruned
        weights as zeros, low-rank factors multiplied back. A quantized model (whose layers also
        quantize their inputs) or an option the family's config cannot express raises a `ValueError`
        naming it. The folder is written elsewhere and moved into place, so a failed export leaves
        nothing half written.

        Args:
            directory: str. The output folder; created, and it must be empty unless `overwrite`.
            tokenizer: a `kerasllm.tokenizers.Tokenizer`. Also written (tokenizer.json and
                tokenizer_config.json), and its BOS/EOS/PAD ids recorded in config.json. Defaults to
                `None`.
            dtype: str. `"float32"`, `"float16"` or `"bfloat16"`. Defaults to the variables' dtype.
            model_type: str. Force a family (`"llama"`, `"mistral"`, `"qwen2"`, `"qwen3"`,
                `"gemma3_text"`, `"gpt2"`, `"bert"`). Defaults to `None` (chosen from the options).
            max_shard_size: int or str. Larger checkpoints are split into shards with an index, as
                transformers does. Defaults to `"5GB"`.
            overwrite: bool. Replace an existing non-empty folder. Defaults to `False`.

        Returns:
            The directory.

        Example:

        >>> model.export_to_transformers("exported", tokenizer=tokenizer)
        >>> transformers.AutoModelForCausalLM.from_pretrained("exported")
        """
        from kerasllm.models.hugging_face import export

        task = "causal_lm" if self.causal else "masked_lm"
        return export.export_to_transformers(
            self, directory, task, tokenizer=tokenizer, dtype=dtype, model_type=model_type,
            max_shard_size=max_shard_size, overwrite=overwrite,
        )

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
