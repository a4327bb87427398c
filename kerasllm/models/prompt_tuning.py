"""Prompt tuning: a trainable soft prompt prepended to every input of a frozen language model.

`SoftPrompt` holds the `(num_virtual_tokens, hidden_dim)` prompt; `TransformerBackbone` prepends it
to the token embeddings (positions `0 ... P-1`, so real tokens sit at `P ... P+T-1`), runs the blocks
over `P + T` positions and returns the hidden states of the real tokens only. The functions below do
the work behind `LanguageModel.enable_prompt_tuning`, `save_prompt` and `load_prompt`.

References:
    - [Lester et al., 2021 (prompt tuning)](https://arxiv.org/abs/2104.08691)
"""

import json

import keras
import numpy as np
from keras import ops

PROMPT_INITIALIZERS = ("vocabulary", "random")
PROMPT_FILE_FORMAT = "kerasllm-soft-prompt-1"


@keras.saving.register_keras_serializable(package="kerasllm")
class SoftPrompt(keras.layers.Layer):
    """A trainable soft prompt: `num_virtual_tokens` embedding vectors shared by every input.

    Args:
        num_virtual_tokens: int. Number of virtual tokens (rows of the prompt), at least 1.
        hidden_dim: int. Width of each vector (the model's `hidden_dim`).
        initializer: initializer of the prompt. Defaults to a normal with standard deviation 0.02.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: tensor `(B, T, C)`; only its batch size is used.

    Returns:
        The prompt broadcast to the batch, `(B, num_virtual_tokens, hidden_dim)`.

    Example:

    >>> prompt = kerasllm.models.prompt_tuning.SoftPrompt(num_virtual_tokens=4, hidden_dim=8)
    >>> prompt(keras.ops.zeros((2, 5, 8))).shape
    (2, 4, 8)

    References:
        - [Lester et al., 2021](https://arxiv.org/abs/2104.08691)
    """

    def __init__(self, num_virtual_tokens, hidden_dim, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_virtual_tokens = num_virtual_tokens
        self.hidden_dim = hidden_dim
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomNormal(stddev=0.02))

    def build(self, input_shape=None):
        self.prompt = self.add_weight(
            name="prompt", shape=(self.num_virtual_tokens, self.hidden_dim), initializer=self.initializer
        )
        self.built = True

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        prompt = ops.cast(self.prompt, self.compute_dtype)[None]  # (1, P, C)
        return ops.broadcast_to(prompt, (batch, self.num_virtual_tokens, self.hidden_dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_virtual_tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_virtual_tokens": self.num_virtual_tokens,
                "hidden_dim": self.hidden_dim,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config


def prompt_tuning_config(model):
    """The prompt-tuning settings recorded on `model` (a dict), or `None`."""
    return getattr(model, "_prompt_tuning", None)


def enable_prompt_tuning(model, num_virtual_tokens, initializer="vocabulary", seed=None):
    """Adds a soft prompt to `model.backbone` and freezes every other variable of `model`."""
    if prompt_tuning_config(model) is not None:
        raise ValueError("Prompt tuning is already enabled on this model; enable it once.")
    if getattr(model, "_lora", None) is not None:
        raise ValueError(
            "LoRA is enabled on this model; combine it with prompt tuning by calling `model.merge_lora()` "
            "first, or use one method at a time."
        )
    if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, (int, np.integer)) or num_virtual_tokens <= 0:
        raise ValueError(
            f"`num_virtual_tokens` must be a positive integer, got {num_virtual_tokens!r}. Typical values are 8 to 100."
        )
    num_virtual_tokens = int(num_virtual_tokens)
    limit = model.max_sequence_length
    if num_virtual_tokens >= limit:
        raise ValueError(
            f"num_virtual_tokens={num_virtual_tokens} leaves no room for real tokens: the prompt and the input "
            f"together must fit in max_sequence_length={limit} (it is over by {num_virtual_tokens - limit + 1} "
            "for a single real token). Use fewer virtual tokens or a model with a larger `max_sequence_length`."
        )
    if initializer not in PROMPT_INITIALIZERS:
        raise ValueError(f"Unknown prompt initializer {initializer!r}; use one of {PROMPT_INITIALIZERS}.")
    backbone = model.backbone
    if initializer == "vocabulary":
        # As Lester et al.: start from the embeddings of real tokens, drawn at random from the vocabulary.
        table = ops.convert_to_numpy(ops.cast(backbone.token_embedding.embeddings, "float32"))
        ids = np.random.default_rng(seed).integers(0, table.shape[0], num_virtual_tokens)
        keras_initializer = keras.initializers.Constant(table[ids])
    else:
        keras_initializer = keras.initializers.RandomNormal(stddev=0.02, seed=seed)
    frozen = []
    for variable in model.variables:
        if variable.trainable:
            variable.trainable = False
            frozen.append(variable)
    # Under the model's and backbone's name scopes, so the variable path reads like every other one.
    with keras.name_scope(model.name), keras.name_scope(backbone.name):
        backbone.add_soft_prompt(num_virtual_tokens, keras_initializer)
    if initializer == "vocabulary":
        # A Constant initializer holding an array does not serialize; the prompt's value is in the weights.
        backbone.soft_prompt.initializer = keras.initializers.RandomNormal(stddev=0.02)
    object.__setattr__(model, "_prompt_tuning", {"num_virtual_tokens": num_virtual_tokens, "initializer": initializer})
    object.__setattr__(model, "_prompt_frozen", frozen)


def save_prompt(model, path):
    """Writes only the soft prompt (and its settings) to a NumPy `.npz` file."""
    if prompt_tuning_config(model) is None:
        raise ValueError("Prompt tuning is not enabled on this model; call `model.enable_prompt_tuning(n)` first.")
    if not str(path).endswith(".npz"):
        raise ValueError(f"Soft prompts are saved as a NumPy archive; give a path ending in '.npz', got {path!r}.")
    meta = dict(prompt_tuning_config(model), hidden_dim=model.hidden_dim, format=PROMPT_FILE_FORMAT)
    prompt = ops.convert_to_numpy(ops.cast(model.backbone.soft_prompt.prompt, "float32"))
    np.savez(path, __prompt_config__=np.array(json.dumps(meta)), prompt=prompt)


def load_prompt(model, path):
    """Loads a prompt saved by `save_prompt`, enabling prompt tuning with its size if needed."""
    with np.load(path, allow_pickle=False) as archive:
        if "__prompt_config__" not in archive.files or "prompt" not in archive.files:
            raise ValueError(f"{path!r} is not a kerasllm soft-prompt file; save one with `model.save_prompt(path)`.")
        meta = json.loads(str(archive["__prompt_config__"]))
        prompt = archive["prompt"]
    if meta["hidden_dim"] != model.hidden_dim:
        raise ValueError(
            f"The soft prompt in {path!r} has width {meta['hidden_dim']}, but this model's hidden_dim is "
            f"{model.hidden_dim}. Load it into a model of the same architecture as the one it was trained on."
        )
    current = prompt_tuning_config(model)
    if current is None:
        enable_prompt_tuning(model, meta["num_virtual_tokens"], initializer="random")
        model._prompt_tuning["initializer"] = meta["initializer"]
    elif current["num_virtual_tokens"] != meta["num_virtual_tokens"]:
        raise ValueError(
            f"The soft prompt in {path!r} has {meta['num_virtual_tokens']} virtual tokens, but this model's has "
            f"{current['num_virtual_tokens']}. Load it into a model without prompt tuning (it will be enabled "
            "with the file's size) or enable prompt tuning with the same `num_virtual_tokens`."
        )
    model.backbone.soft_prompt.prompt.assign(prompt)
