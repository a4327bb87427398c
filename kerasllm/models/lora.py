"""LoRA for kerasllm models, on top of Keras's `keras.layers.Dense.enable_lora`.

The functions here do the work behind `LanguageModel.enable_lora`, `merge_lora`, `save_lora_weights`
and `load_lora_weights`. Targets are matched by the name of a `Dense` sublayer: `"query"`, `"key"`,
`"value"` and `"output"` in attention, `"intermediate"`, `"gate"` and `"output"` in the feed-forward
network (`"output"` names both), and `"lm_head"` when the head is untied. Every other variable
(embeddings, norms, biases, untargeted kernels) is frozen, so `model.fit()` trains the adapters only.

Keras's `Dense` computes `x @ (W + (alpha / rank) * A @ B)` with `A` (in, rank) initialised He-uniform
and `B` (rank, out) at zero, so a freshly enabled model computes exactly what the base model computes.
It also works on an int8-quantized `Dense` (QLoRA style): the frozen kernel stays int8 and the
float32 adapters train on top.

References:
    - [Hu et al., 2021 (LoRA)](https://arxiv.org/abs/2106.09685)
    - [Dettmers et al., 2023 (QLoRA)](https://arxiv.org/abs/2305.14314)
"""

import json

import keras
import numpy as np
from keras import ops

from kerasllm.utils.collection import collect_once

LORA_FILE_FORMAT = "kerasllm-lora-1"


def named_dense_layers(model):
    """Returns `[(path, layer)]` for every `keras.layers.Dense` under `model`, in a fixed order.

    Paths are the sublayer names joined by `/` from the model down (e.g.
    `"backbone/block_0/attention/query"`); they do not include the model's own name.
    """
    found = []

    def walk(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}{child.name}"
            if isinstance(child, keras.layers.Dense):
                found.append((path, child))
            walk(child, path + "/")

    walk(model, "")
    return found


def lora_config(model):
    """The LoRA settings recorded on `model` (a dict), or `None` if LoRA is not enabled."""
    return getattr(model, "_lora", None)


def enable_lora(model, rank, alpha=None, target_layers=("query", "value")):
    """Adds LoRA adapters to the `Dense` sublayers named in `target_layers` and freezes the rest.

    Args:
        model: a kerasllm model (built).
        rank: int. Rank of the adapters, at least 1.
        alpha: float. Scale numerator: the update is `(alpha / rank) * A @ B`. Defaults to `rank`.
        target_layers: str or iterable of str. Names of the `Dense` sublayers to adapt.

    Returns:
        The list of adapted layer paths.
    """
    if lora_config(model) is not None:
        raise ValueError(
            "LoRA is already enabled on this model. Enable it once; to change rank or targets, call "
            "`model.merge_lora()` first (which folds the current adapters into the kernels) or rebuild "
            "the model from its base weights."
        )
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank <= 0:
        raise ValueError(f"LoRA `rank` must be a positive integer, got {rank!r}. Typical values are 4 to 16.")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise ValueError(f"LoRA `alpha` must be a positive number or None (meaning `rank`), got {alpha!r}.")
    if isinstance(target_layers, str):
        target_layers = (target_layers,)
    target_layers = tuple(target_layers)
    if not target_layers:
        raise ValueError("`target_layers` is empty; name at least one Dense sublayer, e.g. ('query', 'value').")
    layers = named_dense_layers(model)
    valid = sorted({layer.name for _, layer in layers})
    missing = [name for name in target_layers if name not in valid]
    if missing:
        raise ValueError(
            f"LoRA target(s) {missing} match no Dense layer of this model. Valid target names are {valid}."
        )
    frozen = []
    for variable in model.variables:
        if variable.trainable:
            variable.trainable = False
            frozen.append(variable)
    adapted = []
    for path, layer in layers:
        if layer.name in target_layers:
            # Keras's enable_lora freezes the kernel itself, refuses a second call, and creates the
            # adapters in float32 whatever the compute dtype.
            layer.enable_lora(int(rank), lora_alpha=alpha)
            adapted.append(path)
    object.__setattr__(model, "_lora", {"rank": int(rank), "alpha": alpha, "target_layers": list(target_layers)})
    object.__setattr__(model, "_lora_frozen", frozen)
    return adapted


def lora_layers(model):
    """`[(path, layer)]` of the `Dense` layers of `model` that carry LoRA adapters."""
    return [(path, layer) for path, layer in named_dense_layers(model) if getattr(layer, "lora_enabled", False)]


def _require_lora(model, action):
    if lora_config(model) is None:
        raise ValueError(f"LoRA is not enabled on this model, so it cannot {action}. Call `model.enable_lora(rank)` first.")


def merge_lora(model):
    """Folds every adapter into its kernel and removes the adapters; unfreezes what LoRA froze."""
    _require_lora(model, "merge adapters")
    with collect_once():  # Keras collects garbage once per deleted adapter otherwise
        for _, layer in lora_layers(model):
            kernel, scale, zero = layer._get_kernel_with_merged_lora()
            layer._kernel.assign(ops.cast(kernel, layer._kernel.dtype))
            if scale is not None:
                layer.kernel_scale.assign(scale)
            if zero is not None:
                layer.kernel_zero.assign(zero)
            del layer.lora_kernel_a  # Keras's Layer.__delattr__ untracks the variable
            del layer.lora_kernel_b
            layer.lora_enabled = False
            layer.lora_rank = None
            layer.lora_alpha = None
    for variable in model._lora_frozen:
        variable.trainable = True
    object.__setattr__(model, "_lora", None)
    object.__setattr__(model, "_lora_frozen", [])


def save_lora_weights(model, path):
    """Writes only the adapter variables (and the LoRA settings) to a NumPy `.npz` file."""
    _require_lora(model, "save adapter weights")
    if not str(path).endswith(".npz"):
        raise ValueError(f"LoRA weights are saved as a NumPy archive; give a path ending in '.npz', got {path!r}.")
    arrays = {}
    for layer_path, layer in lora_layers(model):
        arrays[f"{layer_path}/lora_kernel_a"] = ops.convert_to_numpy(layer.lora_kernel_a)
        arrays[f"{layer_path}/lora_kernel_b"] = ops.convert_to_numpy(layer.lora_kernel_b)
    meta = dict(lora_config(model), format=LORA_FILE_FORMAT)
    np.savez(path, __lora_config__=np.array(json.dumps(meta)), **arrays)


def load_lora_weights(model, path):
    """Loads adapters saved by `save_lora_weights`, enabling LoRA with the file's settings if needed."""
    with np.load(path, allow_pickle=False) as archive:
        if "__lora_config__" not in archive.files:
            raise ValueError(f"{path!r} is not a kerasllm LoRA file (no LoRA settings inside); save one with `model.save_lora_weights(path)`.")
        meta = json.loads(str(archive["__lora_config__"]))
        arrays = {name: archive[name] for name in archive.files if name != "__lora_config__"}
    saved = {key: meta[key] for key in ("rank", "alpha", "target_layers")}
    current = lora_config(model)
    if current is None:
        enable_lora(model, saved["rank"], alpha=saved["alpha"], target_layers=tuple(saved["target_layers"]))
    elif current != saved:
        raise ValueError(
            f"The LoRA file {path!r} holds adapters with {saved}, but this model has LoRA enabled with "
            f"{current}. Load it into a model without LoRA (it will be enabled with the file's settings) "
            "or enable LoRA with the same rank, alpha and target_layers."
        )
    expected = {}
    for layer_path, layer in lora_layers(model):
        expected[f"{layer_path}/lora_kernel_a"] = layer.lora_kernel_a
        expected[f"{layer_path}/lora_kernel_b"] = layer.lora_kernel_b
    if set(expected) != set(arrays):
        raise ValueError(
            f"The LoRA file {path!r} does not fit this model: adapters only in the file "
            f"{sorted(set(arrays) - set(expected))[:4]}, only in the model {sorted(set(expected) - set(arrays))[:4]}. "
            "Load it into a model of the same architecture as the one it was saved from."
        )
    for name, variable in expected.items():
        if tuple(arrays[name].shape) != tuple(variable.shape):
            raise ValueError(
                f"Adapter {name!r} has shape {arrays[name].shape} in {path!r} but {tuple(variable.shape)} in this "
                "model; load it into a model of the same architecture as the one it was saved from."
            )
    for name, variable in expected.items():
        variable.assign(arrays[name])


def count_lora_parameters(model):
    """Number of adapter parameters: the sum over adapted layers of `rank * (in + out)`."""
    return sum(int(np.prod(l.lora_kernel_a.shape)) + int(np.prod(l.lora_kernel_b.shape)) for _, l in lora_layers(model))
